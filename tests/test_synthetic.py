"""mammo.data.synthetic: the generated tree has the real TCIA layout, CSV quirks and DICOM headers,
is deterministic, ingests through the real reader, and does not give its labels away cheaply."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import shutil
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mammo.core.errors import ConfigError, DataError
from mammo.data import synthetic
from mammo.data.cbis import ingest_cbis
from mammo.data.cohort import plan_abnormalities
from mammo.data.synthetic import CSV_FILES, DEFAULT_CASES, encode_dicom, generate_tree
from tests.conftest import SHARED_CBIS

REAL_CSV = SHARED_CBIS / "csv"
NBIA_FILE = re.compile(
    r"^(?P<case>(Mass|Calc)-(Training|Test)_P_\d{5}_(LEFT|RIGHT)_(CC|MLO)(_\d+)?)/"
    r"\d\d-\d\d-\d{4}-DDSM-(?P<study>\d{5})/1-(?P<description>full mammogram images|ROI mask images|cropped images)-"
    r"(?P<series>\d{5})/00000[01]\.dcm$"
)
SMALL = 24  # case rows: a dozen abnormalities, a few seconds to generate


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_tree(tmp_path_factory.mktemp("synthetic") / "tree", cases=SMALL, seed=0)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def all_rows(tree: Path) -> list[dict[str, str]]:
    return [row | {"_file": name} for name in CSV_FILES.values() for row in read_rows(tree / name)]


def headers_by_series(tree: Path) -> dict[str, list[tuple[Path, pydicom.Dataset]]]:
    found: dict[str, list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
    for path in sorted(tree.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        found[ds.SeriesInstanceUID].append((path, ds))
    return found


# ---------------------------------------------------------------- CSVs


@pytest.mark.reference
def test_csvs_have_the_real_names_headers_and_quirks(small_tree: Path) -> None:
    assert sorted(p.name for p in small_tree.glob("*.csv")) == sorted(CSV_FILES.values())
    for name in CSV_FILES.values():
        raw = (small_tree / name).read_bytes()
        real = (REAL_CSV / name).read_bytes()
        assert raw.split(b"\r\n", 1)[0] == real.split(b"\r\n", 1)[0]  # the exact header, spelling quirks included
        assert raw.endswith(b"\r\n") and raw.count(b"\r\n") == len(read_rows(small_tree / name)) + 1
        newline_column = "ROI mask file path" if name.startswith("mass") else "cropped image file path"
        for row in read_rows(small_tree / name):
            for column in ("image file path", "cropped image file path", "ROI mask file path"):
                assert row[column].endswith("\n") == (column == newline_column), (name, column)
            assert re.fullmatch(r"P_\d{5}", row["patient_id"])
            assert row["pathology"] in ("MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK")
            assert row["abnormality type"] == ("mass" if name.startswith("mass") else "calcification")


def test_csv_paths_use_uids_with_the_real_crop_mask_naming(small_tree: Path) -> None:
    for row in all_rows(small_tree):
        image, crop, mask = (
            row[c].strip() for c in ("image file path", "cropped image file path", "ROI mask file path")
        )
        case = f"{row['_file'].split('_')[0].title()}-{'Training' if 'train' in row['_file'] else 'Test'}"
        case += f"_{row['patient_id']}_{row['left or right breast']}_{row['image view']}"
        assert re.fullmatch(rf"{case}/[\d.]+/[\d.]+/000000\.dcm", image)
        assert crop.split("/")[0] == mask.split("/")[0] == f"{case}_{row['abnormality id']}"
        if row["_file"].startswith("calc"):  # every calc mask is 000000, in the crop's series
            assert (crop[-10:], mask[-10:]) == ("000001.dcm", "000000.dcm") and crop[:-10] == mask[:-10]
        elif crop.split("/")[2] == mask.split("/")[2]:
            assert (crop[-10:], mask[-10:]) == ("000000.dcm", "000001.dcm")
        else:  # a mass mask in a study and series of its own
            assert (
                crop.endswith("000000.dcm") and mask.endswith("000000.dcm") and crop.split("/")[1] != mask.split("/")[1]
            )


# ---------------------------------------------------------------- DICOM tree


def test_files_are_laid_out_as_the_nbia_retriever_writes_them(small_tree: Path) -> None:
    files = sorted(p.relative_to(small_tree).as_posix() for p in small_tree.rglob("*.dcm"))
    assert files and all(NBIA_FILE.match(f) for f in files)
    assert not any((small_tree / row["image file path"].strip()).exists() for row in all_rows(small_tree))
    for relative in files:
        match = NBIA_FILE.match(relative)
        ds = pydicom.dcmread(small_tree / relative, stop_before_pixels=True)
        assert ds.PatientID == ds.PatientName == match["case"]
        assert (ds.StudyInstanceUID[-5:], ds.SeriesInstanceUID[-5:]) == (match["study"], match["series"])
    descriptions = Counter(NBIA_FILE.match(f)["description"] for f in files)
    assert set(descriptions) == {"full mammogram images", "ROI mask images", "cropped images"}


def test_every_csv_row_resolves_by_uid_to_a_mammogram_its_mask_and_its_crop(small_tree: Path) -> None:
    series = headers_by_series(small_tree)
    for row in all_rows(small_tree):
        (_, full), *rest = series[row["image file path"].strip().split("/")[2]]
        assert not rest and full.SeriesDescription == "full mammogram images"
        candidates = {p: ds for key in ("cropped image file path", "ROI mask file path")
                      for p, ds in series[row[key].strip().split("/")[2]]}  # fmt: skip
        assert len(candidates) == 2
        by_role = {ds.SeriesDescription: ds for ds in candidates.values()}
        mask, crop = by_role["ROI mask images"].pixel_array, by_role["cropped images"].pixel_array
        image = full.pixel_array
        assert image.dtype == np.uint16 and crop.dtype == np.uint16 and mask.dtype == np.uint8
        assert mask.shape == image.shape and set(np.unique(mask)) == {0, 255}
        assert min(crop.shape) >= 100 and max(crop.shape) <= 250 and len(np.unique(crop)) > 50
        corner = locate(crop, image)  # the crop is cut from its mammogram, around the ROI
        for axis, (start, length) in enumerate(zip(corner, crop.shape, strict=True)):
            marked = np.flatnonzero(mask.any(axis=1 - axis))
            assert start <= marked.mean() < start + length
            assert (start <= marked[0] and marked[-1] < start + length) or 1.2 * len(marked) > 250
        assert full.Laterality == row["left or right breast"][0] and full.PatientOrientation == row["image view"]


def locate(crop: np.ndarray, image: np.ndarray) -> tuple[int, int]:
    """Where `crop` sits in `image` (the crop is an exact sub-array of its mammogram)."""
    windows = np.lib.stride_tricks.sliding_window_view(image, crop.shape[1], axis=1)  # (rows, offsets, width)
    for top, left in zip(*np.nonzero((windows == crop[0]).all(axis=-1)), strict=True):
        if np.array_equal(image[top : top + crop.shape[0], left : left + crop.shape[1]], crop):
            return int(top), int(left)
    raise AssertionError("crop not found in its full mammogram")


def test_headers_are_16_bit_monochrome2_mg_explicit_vr(small_tree: Path) -> None:
    for path in list(small_tree.rglob("*.dcm"))[:40]:
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert (ds.Modality, ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.PixelRepresentation) == (
            "MG", "MONOCHROME2", 1, 0,
        )  # fmt: skip
        mask = ds.SeriesDescription == "ROI mask images"
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == ((8, 8, 7) if mask else (16, 16, 15))


def test_mammograms_show_a_breast_against_the_chest_wall_side(small_tree: Path) -> None:
    for path in small_tree.glob("*/*/1-full mammogram images-*/000000.dcm"):
        ds = pydicom.dcmread(path)
        image = ds.pixel_array.astype(float)
        chest, far = (image[:, :5], image[:, -5:]) if ds.Laterality == "L" else (image[:, -5:], image[:, :5])
        assert chest.mean() > 4 * far.mean()  # tissue on the chest-wall side, dark background opposite
        quarter = image.shape[1] // 4 if ds.Laterality == "L" else image.shape[1] - image.shape[1] // 4
        assert np.median(image[:, quarter]) > 15000  # a quarter of the way in, mostly breast


def test_encode_dicom_writes_the_same_bytes_as_pydicom() -> None:
    pixels = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000
    meta = [
        ("FileMetaInformationVersion", b"\x00\x01"), ("MediaStorageSOPClassUID", "1.2.840.10008.5.1.4.1.1.7"),
        ("MediaStorageSOPInstanceUID", "1.2.3.4"), ("TransferSyntaxUID", "1.2.840.10008.1.2.1"),
        ("ImplementationClassUID", "1.2.3.45"), ("ImplementationVersionName", "MAMMO_0.1.0"),
    ]  # fmt: skip
    header = [
        ("PatientID", "Calc-Test_P_00001_LEFT_CC_1"), ("SOPInstanceUID", "1.2.3.4"), ("Modality", "MG"),
        ("SeriesNumber", "1"), ("Laterality", "L"), ("Rows", 3), ("Columns", 4), ("BitsAllocated", 16),
        ("AccessionNumber", ""), ("PhotometricInterpretation", "MONOCHROME2"),
    ]  # fmt: skip
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    for keyword, value in meta:
        setattr(ds.file_meta, keyword, value)
    for keyword, value in header:
        setattr(ds, keyword, value)
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW"
    expected = io.BytesIO()
    ds.save_as(expected, enforce_file_format=True)
    assert encode_dicom(meta, header, pixels=pixels) == expected.getvalue()


# ---------------------------------------------------------------- structure, determinism, arguments


@pytest.mark.parametrize("cases", [8, 9, 31])
def test_small_trees_still_have_both_labels_in_both_splits(cases: int) -> None:
    plan = plan_abnormalities(np.random.default_rng(cases), cases=cases)
    assert sum(len(a.views) for a in plan) == cases
    assert {(a.kind, a.split) for a in plan} == {(k, s) for k in ("mass", "calcification") for s in ("train", "test")}


def test_plan_has_patients_with_both_views_and_a_by_patient_split() -> None:
    plan = plan_abnormalities(np.random.default_rng(3), cases=1001)
    assert sum(len(a.views) for a in plan) == 1001
    assert [a.views for a in plan[:-1]] == [("CC", "MLO")] * (len(plan) - 1) and plan[-1].views == ("CC",)
    per_patient = Counter(a.patient for a in plan)
    assert set(per_patient.values()) <= {1, 2, 3} and len(set(per_patient.values())) == 3
    assert all(len({a.split for a in plan if a.patient == p}) == 1 for p in per_patient)
    test_patients = {a.patient for a in plan if a.split == "test"}
    assert 0.15 < len(test_patients) / len(per_patient) < 0.25
    rows = Counter((a.kind, a.split) for a in plan for _ in a.views)
    for split in ("train", "test"):
        assert 0.4 < rows["mass", split] / (rows["mass", split] + rows["calcification", split]) < 0.6
    numbers = defaultdict(list)
    for a in plan:
        numbers[a.patient, a.side].append(a.number)
    assert all(ids == list(range(1, len(ids) + 1)) for ids in numbers.values())
    separate = [a.separate_mask for a in plan if a.kind == "mass"]
    assert 0.02 < np.mean(separate) < 0.15 and not any(a.separate_mask for a in plan if a.kind != "mass")


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    def tree_bytes(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    first = tree_bytes(generate_tree(tmp_path / "a", cases=9, seed=7))
    assert first == tree_bytes(generate_tree(tmp_path / "b", cases=9, seed=7))
    other = tree_bytes(generate_tree(tmp_path / "c", cases=9, seed=8))
    assert other.keys() != first.keys()
    assert [other[name] != first[name] for name in CSV_FILES.values()] == [True] * 4


# The portable tree's digest (relative paths + bytes of every file, cases=9, seed=7): numpy at its AVX2 code
# paths at most. Drawn on an AVX-512 Xeon in a child with its AVX-512 dispatch off, which for the default tree
# gave the AVX2 EPYC's own bytes (prepared digest 5c6edf627878728d on both); the Xeon's native draw differs.
PORTABLE_TREE_DIGEST = "3bfbd43c4bcf8448"


def _tree_digest(root: Path) -> str:
    sha = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        sha.update(path.relative_to(root).as_posix().encode())
        sha.update(path.read_bytes())
    return sha.hexdigest()[:16]


def test_the_portable_tree_has_the_same_bytes_on_every_avx2_machine(tmp_path: Path) -> None:
    tree = synthetic.generate_portable_tree(tmp_path / "tree", cases=9, seed=7)
    assert _tree_digest(tree) == PORTABLE_TREE_DIGEST
    disabled = synthetic.portable_numpy_env().get("NPY_DISABLE_CPU_FEATURES", "").split()
    if not disabled:  # an AVX2-only CPU: numpy's own dispatch already is the portable one
        assert _tree_digest(generate_tree(tmp_path / "native", cases=9, seed=7)) == PORTABLE_TREE_DIGEST
    assert set(disabled) <= {"X86_V4", "AVX512_ICL", "AVX512_SPR", "AVX512_SKX", "AVX512_CLX", "AVX512_CNL"}


def test_the_portable_generator_reports_its_childs_error(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    with pytest.raises(DataError, match=r"generating the synthetic tree into .*busy failed \(exit status 2"):
        synthetic.generate_portable_tree(tmp_path / "busy", cases=9, seed=7)
    assert "busy is not empty" in capfd.readouterr().err
    with pytest.raises(ConfigError, match="seed must"):  # checked before any process starts
        synthetic.generate_portable_tree(tmp_path / "other", cases=9, seed=-1)


@pytest.mark.parametrize(
    ("options", "match"),
    [({"cases": 7}, "cases must be an integer ≥ 8"), ({"cases": "12"}, "cases must be"), ({"seed": -1}, "seed must")],
)
def test_bad_arguments_are_refused(tmp_path: Path, options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        generate_tree(tmp_path / "tree", **options)


def test_refuses_to_write_into_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        generate_tree(tmp_path, cases=8)
    assert (tmp_path / "old.txt").read_text() == "keep me"


# ---------------------------------------------------------------- through the real reader


@pytest.mark.parametrize("patch", ["crop", "roi"])
def test_tree_ingests_with_nothing_skipped(small_tree: Path, patch: str) -> None:
    result = ingest_cbis(data_dir=small_tree, image_size=32, patch=patch, progress=False)
    rows = all_rows(small_tree)
    assert result.skipped == [] and result.patches.shape == (len(rows), 32, 32) == (SMALL, 32, 32)
    expected = Counter((row["_file"].startswith("calc"), "train" in row["_file"]) for row in rows)
    got = Counter((int(label) == 1, split == "train") for label, split in result.manifest[["label", "split"]].values)
    assert got == expected
    assert result.patches.std(axis=(1, 2)).min() > 0  # real image content, not blank patches


@pytest.mark.slow
def test_mean_std_max_of_a_patch_do_not_give_the_label_away(tmp_path: Path) -> None:
    tree = generate_tree(tmp_path / "tree", cases=600, seed=0)
    result = ingest_cbis(data_dir=tree, image_size=150, patch="crop", progress=False)
    pixels = result.patches.astype(np.float64)
    features = np.stack([pixels.mean(axis=(1, 2)), pixels.std(axis=(1, 2)), pixels.max(axis=(1, 2))], axis=1)
    labels, train = result.manifest["label"].to_numpy(), (result.manifest["split"] == "train").to_numpy()
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(features[train], labels[train])
    accuracy = model.score(features[~train], labels[~train])
    print(f"logistic regression on patch mean/std/max: test accuracy {accuracy:.3f} ({(~train).sum()} patches)")
    assert set(labels[~train]) == {0, 1} and accuracy <= 0.70


@pytest.mark.slow
def test_default_tree_generates_and_ingests(tmp_path: Path) -> None:
    start = time.perf_counter()
    tree = generate_tree(tmp_path / "tree", seed=0)
    generated = time.perf_counter()
    result = ingest_cbis(data_dir=tree, image_size=150, patch="crop", progress=False)
    done = time.perf_counter()
    print(f"default synthetic tree: {DEFAULT_CASES} rows, {len(result.index)} DICOMs, "
          f"generate {generated - start:.1f} s, ingest {done - generated:.1f} s")  # fmt: skip
    shutil.rmtree(tree)  # ~0.5 GB: do not leave it in pytest's kept temp folders
    splits = Counter(result.manifest["split"])
    assert result.skipped == [] and len(result.patches) == DEFAULT_CASES
    assert 0.15 < splits["test"] / DEFAULT_CASES < 0.25 and 0.45 < result.manifest["label"].mean() < 0.55
