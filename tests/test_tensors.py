"""The published numpy layout: odd indices are abnormalities, raw labels 1–4 map to mass/calc."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from mammo.core.errors import DataError, RecordError
from mammo.data.prepare import prepare


def _write_tensors(folder: Path, *, size: int = 40, train: int = 6, test: int = 4, bad_label: bool = False) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for tensor_name, label_name, count in (
        ("train_tensor.npy", "train_labels.npy", train),
        ("public_test_tensor.npy", "public_test_labels.npy", test),
    ):
        tensor = rng.integers(0, 65535, size=(count * 2, size, size, 1), dtype=np.uint16)
        labels = np.zeros(count * 2, dtype=np.int64)
        labels[1::2] = np.resize([1, 2, 3, 4], count)  # odd: abnormalities; even: baseline 0
        if bad_label:
            labels[1] = 7
        np.save(folder / tensor_name, tensor)
        np.save(folder / label_name, labels)


def test_tensors_prepare_keeps_odd_indices_and_maps_labels(tmp_path: Path) -> None:
    _write_tensors(tmp_path / "npy")
    dataset = prepare(source="tensors", data_dir=tmp_path / "npy", out=tmp_path / "out", image_size=32).dataset
    assert dataset.patches.shape == (10, 32, 32) and dataset.patches.dtype == np.uint16
    train = dataset.manifest[dataset.manifest.split == "train"]
    assert list(train.label) == [0, 0, 1, 1, 0, 0]
    assert list(train.pathology[:4]) == ["BENIGN", "MALIGNANT", "BENIGN", "MALIGNANT"]
    assert list(train.source_file[:2]) == ["train_tensor.npy[1]", "train_tensor.npy[3]"]
    assert dataset.info["counts"] == {"train": {"mass": 4, "calcification": 2}, "test": {"mass": 2, "calcification": 2}}


def test_tensors_unknown_label_raises_or_is_counted(tmp_path: Path) -> None:
    _write_tensors(tmp_path / "npy", bad_label=True)
    with pytest.raises(RecordError, match=r"train_labels.npy index 1: unknown label 7"):
        prepare(source="tensors", data_dir=tmp_path / "npy", out=tmp_path / "a", image_size=32)
    dataset = prepare(
        source="tensors", data_dir=tmp_path / "npy", out=tmp_path / "b", image_size=32, on_error="skip"
    ).dataset
    assert dataset.info["skipped"] == 2 and dataset.info["skipped_reasons"] == {"unknown_label": 2}
    assert dataset.info["count"] == 8


def test_tensors_refuse_pickled_arrays_and_name_missing_files(tmp_path: Path) -> None:
    _write_tensors(tmp_path / "npy")
    with pytest.raises(DataError, match=r"public_test_tensor\.npy not found"):
        (tmp_path / "npy" / "public_test_tensor.npy").unlink()
        prepare(source="tensors", data_dir=tmp_path / "npy", out=tmp_path / "out")
    np.save(tmp_path / "npy" / "public_test_tensor.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="allow_pickle=False"):
        prepare(source="tensors", data_dir=tmp_path / "npy", out=tmp_path / "out")


def test_float_tensors_are_scaled_per_dataset_not_per_patch(tmp_path: Path) -> None:
    _write_tensors(tmp_path / "raw", size=32)
    for name in ("train_tensor.npy", "public_test_tensor.npy"):  # raw 16-bit values stored as float32
        tensor = np.load(tmp_path / "raw" / name).astype(np.float32)
        tensor[1] = 0.5  # one abnormality patch of very dark raw pixels: all ≤ 1
        np.save(tmp_path / "raw" / name, tensor)
    raw = prepare(source="tensors", data_dir=tmp_path / "raw", out=tmp_path / "a", image_size=32).dataset
    assert raw.patches[0].max() <= 1  # stays dark: the dataset's maximum says the values are raw
    assert raw.patches[1].max() > 1000
    _write_tensors(tmp_path / "scaled", size=32)
    for name in ("train_tensor.npy", "public_test_tensor.npy"):  # the same data divided by 65535
        np.save(tmp_path / "scaled" / name, np.load(tmp_path / "scaled" / name).astype(np.float64) / 65535)
    scaled = prepare(source="tensors", data_dir=tmp_path / "scaled", out=tmp_path / "b", image_size=32).dataset
    _write_tensors(tmp_path / "ref", size=32)
    plain = prepare(source="tensors", data_dir=tmp_path / "ref", out=tmp_path / "c", image_size=32).dataset
    assert np.abs(scaled.patches.astype(int) - plain.patches.astype(int)).max() <= 1  # the same pixels back


def test_tensors_carry_no_patients_so_a_patient_split_is_logged_as_per_image(tmp_path: Path) -> None:
    from mammo.model.variants import make_config
    from mammo.train.training import run_params

    _write_tensors(tmp_path / "npy")
    dataset = prepare(source="tensors", data_dir=tmp_path / "npy", out=tmp_path / "out", image_size=32).dataset
    assert dataset.info["patients_known"] is False and dataset.patients_in_both_splits is None
    config = make_config("model5")
    assert config.split_by == "patient"
    with pytest.warns(UserWarning, match="carries no patient ids .* logs split_by=image"):
        params = run_params(config, dataset, precision="float32")
    assert params["split_by"] == "image" and params["data_patients_in_both_splits"] == "unknown"
    synthetic_like = make_config("model5", split_by="image")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked per image: logged as asked, no warning
        assert run_params(synthetic_like, dataset, precision="float32")["split_by"] == "image"
