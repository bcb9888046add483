"""mammo.data.cbis: the real CSVs and DICOMs, other folder layouts, and every bad-input reason."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydicom.uid import generate_uid

from mammo.core.errors import ConfigError, DataError, RecordError
from mammo.data.cbis import ingest_cbis, read_case_descriptions
from mammo.data.dicom import read_pixels, resize_patch
from mammo.data.dicom_index import index_dicom_tree
from mammo.data.masks import crop_around_mask
from mammo.data.store import MANIFEST_COLUMNS
from tests.conftest import SHARED_CBIS, make_dicom

CSV_DIR, DICOM_DIR = SHARED_CBIS / "csv", SHARED_CBIS / "dicom"
REAL_ROWS = [("P_00016", "LEFT", "CC", 1), ("P_00116", "RIGHT", "MLO", 1), ("P_00116", "RIGHT", "MLO", 2)]
MASS_HEADER = (
    "patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,mass shape,"
    "mass margins,assessment,pathology,subtlety,image file path,cropped image file path,ROI mask file path"
)
CALC_HEADER = MASS_HEADER.replace("breast_density", "breast density").replace("mass shape,mass margins", "calc type,calc distribution")  # fmt: skip


# ---------------------------------------------------------------- helpers for tiny trees


def make_images(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(full mammogram 120×90, its binary ROI mask, the crop cut around it)."""
    full = np.random.default_rng(seed).integers(1000, 60000, (120, 90)).astype(np.uint16)
    mask = np.zeros_like(full)
    mask[40:60, 30:55] = 255
    return full, mask, full[35:65, 25:60].copy()


def add_case(root: Path, case: str, *, crop_name: str = "000000.dcm", mask_name: str = "000001.dcm") -> dict[str, str]:
    """Write one abnormality in the CSV's own UID layout; return its three CSV paths."""
    full, mask, crop = make_images(len(case))
    image_study, image_series, study, series = (generate_uid() for _ in range(4))
    paths = {
        "image": f"{case.rsplit('_', 1)[0]}/{image_study}/{image_series}/000000.dcm",
        "crop": f"{case}/{study}/{series}/{crop_name}",
        "roi": f"{case}/{study}/{series}/{mask_name}",
    }
    blobs = {
        "image": make_dicom(full, series=image_series, study=image_study),
        "crop": make_dicom(crop, series=series, study=study),
        "roi": make_dicom(mask, series=series, study=study),
    }
    for kind, relative in paths.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(blobs[kind])
    return paths


def csv_row(paths: dict[str, str], *, patient: str = "P_00001", abnormality: str = "mass", pathology: str = "BENIGN"):
    return [
        patient,
        "2",
        "LEFT",
        "CC",
        "1",
        abnormality,
        "OVAL",
        "CIRCUMSCRIBED",
        "3",
        pathology,
        "3",
        paths["image"],
        paths["crop"],
        paths["roi"] + "\n",
    ]  # fmt: skip  (the real files' embedded newline)


def write_csvs(folder: Path, mass_rows=(), calc_rows=(), *, drop: str | None = None) -> Path:
    """The four case-description files in the real schema (CRLF), with optional rows."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind, header, rows in (("mass", MASS_HEADER, mass_rows), ("calc", CALC_HEADER, calc_rows)):
        for split in ("train", "test"):
            columns = header.split(",")
            keep = [i for i, name in enumerate(columns) if name != drop]
            with open(folder / f"{kind}_case_description_{split}_set.csv", "w", newline="") as handle:
                writer = csv.writer(handle, lineterminator="\r\n")
                writer.writerow([columns[i] for i in keep])
                for row in rows if split == "train" else ():
                    writer.writerow([row[i] for i in keep])
    return folder


def tiny_ingest(tmp_path: Path, mass_rows, **kwargs):
    return ingest_cbis(data_dir=tmp_path / "tree", csv_dir=write_csvs(tmp_path / "csv", mass_rows), progress=False, **kwargs)  # fmt: skip


# ---------------------------------------------------------------- the real reference files


@pytest.fixture(scope="module")
def cases() -> pd.DataFrame:
    return read_case_descriptions(CSV_DIR)


@pytest.fixture(scope="module")
def real_ingest():
    return ingest_cbis(data_dir=DICOM_DIR, csv_dir=CSV_DIR, on_error="skip", progress=False)


@pytest.mark.reference
def test_the_four_real_csvs_parse_to_normalised_rows(cases: pd.DataFrame) -> None:
    counts = cases.groupby("csv_file").size().to_dict()
    assert counts == {
        "mass_case_description_train_set.csv": 1318,
        "mass_case_description_test_set.csv": 378,
        "calc_case_description_train_set.csv": 1546,
        "calc_case_description_test_set.csv": 326,
    }
    for column in ("image_path", "crop_path", "roi_path"):
        assert not cases[column].str.contains(r"\s").any(), column  # the embedded newline is gone
        assert cases[column].str.endswith(".dcm").all()
    assert set(cases["side"]) == {"LEFT", "RIGHT"} and set(cases["view"]) == {"CC", "MLO"}
    assert set(cases["pathology"]) == {"MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK"}
    assert (cases["label"] == cases["abnormality_type"].map({"mass": 0, "calcification": 1})).all()
    assert cases["breast_density"].notna().all()  # both spellings of the column
    assert cases.groupby("split").size().to_dict() == {"train": 1318 + 1546, "test": 378 + 326}
    first = cases.iloc[0]
    assert (first["patient_id"], first["case_id"], first["csv_row"]) == (
        "P_00001",
        "Mass-Training_P_00001_LEFT_CC_1",
        1,
    )
    assert first["crop_series_uid"] == first["crop_path"].split("/")[2] and first["abnormality_id"] == 1
    assert cases["crop_series_uid"].str.startswith("1.3.6.1.4.1.9590").all()


@pytest.mark.reference
def test_the_three_real_dicoms_resolve_to_their_rows_as_mass_patches(real_ingest) -> None:
    assert real_ingest.patches.shape == (3, 150, 150) and real_ingest.patches.dtype == np.uint16
    manifest = real_ingest.manifest
    assert list(manifest.columns) == [column for column in MANIFEST_COLUMNS if column != "index"]  # numbered on write
    assert (
        list(manifest[["patient_id", "side", "view", "abnormality_id"]].itertuples(index=False, name=None)) == REAL_ROWS
    )
    assert set(manifest["label"]) == {0} and set(manifest["split"]) == {"test"}
    assert manifest["source_file"].iloc[0].startswith("Mass-Test_P_00016_LEFT_CC_1/")
    assert len(real_ingest.skipped) == 3565 and real_ingest.skip_counts == {"missing_file": 3565}
    first = real_ingest.skipped[0]
    assert set(first) == {"csv_file", "csv_row", "file", "reason", "message"}
    assert (first["csv_file"], first["csv_row"]) == ("mass_case_description_train_set.csv", 1)


@pytest.mark.reference
def test_raise_names_the_csv_row_and_the_fix() -> None:
    with pytest.raises(RecordError, match=r"mass_case_description_train_set.csv row 1 .*--on-error skip") as info:
        ingest_cbis(data_dir=DICOM_DIR, csv_dir=CSV_DIR, progress=False)
    assert info.value.reason == "missing_file" and "re-download" in str(info.value)


@pytest.mark.reference
@pytest.mark.parametrize("layout", ["csv-uids", "nbia-new"])
def test_other_folder_layouts_resolve_by_header_uids(tmp_path: Path, cases: pd.DataFrame, real_ingest, layout) -> None:
    for number, source in enumerate(sorted(DICOM_DIR.rglob("*.dcm"))):
        case = source.relative_to(DICOM_DIR).parts[0]
        row = cases[cases["case_id"] == case].iloc[0]
        target = tmp_path / "tree" / (row["crop_path"] if layout == "csv-uids" else f"{case}/08-29-2017-DDSM-NA-{number}/1.000000-cropped images-{number}/1-1.dcm")  # fmt: skip
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    workers = 2 if layout == "csv-uids" else 1  # once through the spawned process pool (a few seconds to start)
    result = ingest_cbis(data_dir=tmp_path / "tree", csv_dir=CSV_DIR, on_error="skip", progress=False, workers=workers)
    np.testing.assert_array_equal(result.patches, real_ingest.patches)
    pd.testing.assert_frame_equal(result.manifest.drop(columns="source_file"), real_ingest.manifest.drop(columns="source_file"))  # fmt: skip


@pytest.mark.reference
def test_index_lists_every_dicom_with_its_header_uids(tmp_path: Path) -> None:
    index = index_dicom_tree(DICOM_DIR)  # workers > 1 is exercised through ingest in the layout test
    assert len(index) == 3 and (index["error"] == "").all() and set(index["rows"]) == {384, 483, 486}
    assert set(index["series_description"]) == {"cropped images"}
    assert index["series_uid"].str.endswith(("26184", "21596", "93761")).all()
    with pytest.raises(DataError, match="not a folder"):
        index_dicom_tree(tmp_path / "nowhere")


# ---------------------------------------------------------------- tiny trees: content, modes, bad input


def test_crop_is_told_from_mask_by_content_not_by_file_name(tmp_path: Path) -> None:
    normal = add_case(tmp_path / "tree", "Mass-Training_P_00001_LEFT_CC_1")
    swapped = add_case(tmp_path / "tree", "Mass-Training_P_00002_LEFT_CC_1", crop_name="000001.dcm", mask_name="000000.dcm")  # fmt: skip
    # the CSV names the mask as the crop for the second row: the reader must not believe it
    swapped_csv = {"image": swapped["image"], "crop": swapped["roi"], "roi": swapped["crop"]}
    result = tiny_ingest(tmp_path, [csv_row(normal), csv_row(swapped_csv, patient="P_00002")], image_size=32)
    assert result.skipped == [] and result.patches.shape == (2, 32, 32)
    for patch, case in zip(result.patches, ("Mass-Training_P_00001_LEFT_CC_1", "Mass-Training_P_00002_LEFT_CC_1"), strict=True):  # fmt: skip
        np.testing.assert_array_equal(patch, resize_patch(make_images(len(case))[2], 32))


def test_roi_mode_cuts_the_full_image_around_the_mask(tmp_path: Path) -> None:
    paths = add_case(tmp_path / "tree", "Mass-Training_P_00001_LEFT_CC_1")
    result = tiny_ingest(tmp_path, [csv_row(paths)], image_size=32, patch="roi", margin=0.5)
    full, mask, _ = make_images(len("Mass-Training_P_00001_LEFT_CC_1"))
    np.testing.assert_array_equal(result.patches[0], resize_patch(crop_around_mask(full, mask, margin=0.5), 32))
    assert result.manifest["source_file"].iloc[0] == paths["roi"]
    threaded = tiny_ingest(tmp_path, [csv_row(paths)], image_size=32, patch="roi", margin=0.5, workers=2)
    np.testing.assert_array_equal(threaded.patches, result.patches)  # roi mode's worker threads: the same patch


def test_wrong_image_kind_when_only_a_mask_or_a_mask_of_another_size(tmp_path: Path) -> None:
    paths = add_case(tmp_path / "tree", "Mass-Training_P_00001_LEFT_CC_1")
    (tmp_path / "tree" / paths["crop"]).unlink()  # only the mask is left in the series
    result = tiny_ingest(tmp_path, [csv_row(paths)], on_error="skip")
    assert result.skip_counts == {"wrong_image_kind": 1} and "no cropped image" in result.skipped[0]["message"]
    mask_file = tmp_path / "tree" / paths["roi"]
    series = read_pixels(mask_file)[1]["SeriesInstanceUID"]
    mask_file.write_bytes(make_dicom(np.pad(make_images()[1], ((0, 8), (0, 0))), series=series))
    with pytest.raises(RecordError, match="size 120×90") as info:
        tiny_ingest(tmp_path, [csv_row(paths)], patch="roi")
    assert info.value.reason == "wrong_image_kind" and "re-download the series" in str(info.value)


def test_truncated_and_non_dicom_files_are_unreadable_and_indexed(tmp_path: Path) -> None:
    truncated = add_case(tmp_path / "tree", "Mass-Training_P_00001_LEFT_CC_1")
    crop_file = tmp_path / "tree" / truncated["crop"]
    crop_file.write_bytes(crop_file.read_bytes()[:-200])  # pixel data cut short: header still readable
    garbage = add_case(tmp_path / "tree", "Mass-Training_P_00002_LEFT_CC_1")
    for kind in ("crop", "roi"):
        (tmp_path / "tree" / garbage[kind]).write_text("<html>download failed</html>")
    rows = [csv_row(truncated), csv_row(garbage, patient="P_00002")]
    result = tiny_ingest(tmp_path, rows, on_error="skip")
    assert [s["reason"] for s in result.skipped] == ["unreadable_dicom", "unreadable_dicom"]
    assert result.skipped[0]["file"] == truncated["crop"] and "Re-download" in result.skipped[0]["message"]
    assert (result.index["error"] == "unreadable_dicom").sum() == 2  # the two non-DICOM files, recorded not fatal
    with pytest.raises(RecordError, match=r"mass_case_description_train_set.csv row 1 .*truncated"):
        tiny_ingest(tmp_path, rows)


def test_unsafe_paths_and_unknown_labels_are_refused(tmp_path: Path) -> None:
    paths = add_case(tmp_path / "tree", "Mass-Training_P_00001_LEFT_CC_1")
    escaping = dict(paths, crop="../../etc/passwd")
    absolute = dict(paths, image="/etc/passwd")
    rows = [
        csv_row(escaping),
        csv_row(absolute),
        csv_row(paths, abnormality="cyst"),
        csv_row(paths, pathology="UNKNOWN"),
    ]
    result = tiny_ingest(tmp_path, [*rows, csv_row(paths)], on_error="skip")
    assert [s["reason"] for s in result.skipped] == ["unsafe_path", "unsafe_path", "unknown_label", "unknown_label"]
    assert [s["csv_row"] for s in result.skipped] == [1, 2, 3, 4] and len(result.patches) == 1
    with pytest.raises(RecordError, match=r"row 1 .*leaves the data folder") as info:
        tiny_ingest(tmp_path, rows)
    assert info.value.reason == "unsafe_path"


def test_missing_column_or_csv_names_the_file_and_the_fix(tmp_path: Path) -> None:
    write_csvs(tmp_path / "nocol", drop="pathology")
    with pytest.raises(DataError, match=r"mass_case_description_train_set.csv: missing column\(s\) \['pathology'\]"):
        read_case_descriptions(tmp_path / "nocol")
    (write_csvs(tmp_path / "three") / "calc_case_description_test_set.csv").unlink()
    with pytest.raises(DataError, match=r"calc_case_description_test_set.csv not found.*--csv-dir"):
        read_case_descriptions(tmp_path / "three")


def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="patch must be"):
        ingest_cbis(data_dir=tmp_path, patch="whole", progress=False)
    with pytest.raises(ConfigError, match="on_error must be"):
        ingest_cbis(data_dir=tmp_path, on_error="ignore", progress=False)


@pytest.mark.reference
def test_the_real_full_mammograms_match_their_csv_rows_and_the_absent_crops_and_masks_are_named(
    tmp_path: Path, cases: pd.DataFrame
) -> None:
    from tests.test_dicom import _real_full_mammograms

    tree = tmp_path / "tree"
    for name, path in _real_full_mammograms().items():  # any layout: matched by header UIDs
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).symlink_to(path)
    index = index_dicom_tree(tree)
    assert len(index) == 8 and (index["error"] == "").all()
    rows = cases[cases["patient_id"].isin(["P_00173", "P_00820"])]
    assert len(rows) == 10 and set(rows["csv_file"]) == {"mass_case_description_test_set.csv"}
    # Every row's full mammogram is one of the eight (Study and Series UIDs), and each of the eight is some row's.
    assert set(zip(rows["image_study_uid"], rows["image_series_uid"], strict=True)) == set(
        zip(index["study_uid"], index["series_uid"], strict=True)
    )
    ours = set(zip(rows["csv_file"], rows["csv_row"], strict=True))
    for patch, absent in (("roi", "no DICOM of the ROI mask's series"), ("crop", "no DICOM of the crop/ROI series")):
        result = ingest_cbis(data_dir=tree, csv_dir=CSV_DIR, patch=patch, on_error="skip", progress=False)
        assert len(result.patches) == 0 and result.skip_counts == {"missing_file": len(cases)}  # nothing else
        for entry in result.skipped:
            if (
                entry["csv_file"],
                entry["csv_row"],
            ) in ours:  # full mammogram found: its mask or crop is what is missing
                assert absent in entry["message"] and "\n" not in entry["message"], entry["message"]
                series = rows.set_index("csv_row").loc[entry["csv_row"], "roi_series_uid" if patch == "roi" else "crop_series_uid"]  # fmt: skip
                assert f"SeriesInstanceUID {series}" in entry["message"]
            elif patch == "roi":
                assert "no DICOM of the full mammogram's series" in entry["message"]
