from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mammo.core.errors import DataError
from mammo.data.store import load_prepared, write_prepared


def _manifest(count: int) -> pd.DataFrame:
    return pd.DataFrame({
        "patient_id": [f"P_{i // 2:05d}" for i in range(count)], "case_id": "c", "side": "LEFT", "view": "CC",
        "abnormality_id": 1, "label": [i % 2 for i in range(count)], "abnormality_type": "mass",
        "pathology": "BENIGN", "breast_density": 2, "subtlety": 3,
        "split": ["test" if i >= count - 2 else "train" for i in range(count)], "source_file": "f",
    })  # fmt: skip


def test_write_then_load_memory_maps_and_digests_content(tmp_path: Path) -> None:
    patches = np.arange(6 * 8 * 8, dtype=np.uint16).reshape(6, 8, 8)
    first = write_prepared(tmp_path / "a", patches=patches, manifest=_manifest(6), source="x", options={})
    again = write_prepared(tmp_path / "b", patches=patches.copy(), manifest=_manifest(6), source="x", options={})
    changed = patches.copy()
    changed[0, 0, 0] += 1
    other = write_prepared(tmp_path / "c", patches=changed, manifest=_manifest(6), source="x", options={})
    assert first.digest == again.digest != other.digest
    loaded = load_prepared(tmp_path / "a")
    assert isinstance(loaded.patches, np.memmap) and loaded.patches.dtype == np.uint16
    assert list(loaded.split_indices("test")) == [4, 5]
    assert loaded.info["counts"] == {"train": {"mass": 2, "calcification": 2}, "test": {"mass": 1, "calcification": 1}}


def test_loading_a_folder_that_is_not_prepared_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"entrypoints\.prepare"):
        load_prepared(tmp_path)


def test_write_rejects_wrong_dtype(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint16"):
        write_prepared(tmp_path, patches=np.zeros((2, 4, 4), np.float32), manifest=_manifest(2), source="x", options={})


def test_patients_in_both_official_splits_are_counted_and_recorded(tmp_path: Path, shared_cbis: Path) -> None:
    from mammo.data.cbis import read_case_descriptions
    from mammo.data.store import patients_in_both_splits

    # The real CBIS-DDSM split is by abnormality: 31 of its patients have patches on both sides.
    assert patients_in_both_splits(read_case_descriptions(shared_cbis / "csv")) == 31
    manifest = _manifest(6)  # patients P_00000..P_00002, two rows each; rows 4-5 (P_00002) are test
    manifest.loc[5, "patient_id"] = "P_00000"  # P_00000 now in train and test
    patches = np.zeros((6, 8, 8), np.uint16)
    dataset = write_prepared(tmp_path / "a", patches=patches, manifest=manifest, source="x", options={})
    assert dataset.info["patients_in_both_splits"] == 1 == load_prepared(tmp_path / "a").patients_in_both_splits
    unknown = write_prepared(
        tmp_path / "b", patches=patches, manifest=manifest, source="x", options={}, patients_known=False
    )
    assert unknown.info["patients_in_both_splits"] is None and unknown.patients_in_both_splits is None
