"""tf.data input: scaling, shapes, splits, augmentation on train only, seeded determinism, precision choice.

`make_speck_dataset` (also used by the training tests) writes a tiny prepared dataset a small
CNN learns in a few epochs: calcifications are a few bright specks, masses one soft blob.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from mammo.core.errors import ConfigError, DataError
from mammo.core.pixels import scale_patches
from mammo.core.precision import choose_precision, cpu_flags
from mammo.data.store import MANIFEST_COLUMNS, PreparedDataset, write_prepared
from mammo.model.pipeline import (
    CenteredShear,
    augmentation,
    make_datasets,
    pixel_stats,
    train_stream,
)
from mammo.model.variants import make_config


def speck_or_blob(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """One uint16 patch: noisy background + 6 bright 2×2 specks (calcification) or a Gaussian blob (mass)."""
    image = rng.normal(0.3, 0.03, (size, size))
    if label == 1:
        for _ in range(6):
            row, column = rng.integers(2, size - 3, 2)
            image[row : row + 2, column : column + 2] = 0.95
    else:
        grid = np.arange(size) - (size - 1) / 2 + rng.normal(0, size / 12, 2)[:, None]
        radius = size / rng.uniform(5, 7)
        image += 0.35 * np.exp(-(grid[0][:, None] ** 2 + grid[1][None, :] ** 2) / (2 * radius**2))
    return np.clip(image * 65535, 0, 65535).astype(np.uint16)


def make_speck_dataset(
    root: Path, *, size: int = 32, train_patients: int = 24, test_patients: int = 8, seed: int = 0
) -> PreparedDataset:
    """Two views (CC, MLO) of one lesion per patient; patients alternate mass / calcification."""
    rng = np.random.default_rng(seed)
    rows, patches = [], []
    for patient in range(train_patients + test_patients):
        label = patient % 2
        for view in ("CC", "MLO"):
            patches.append(speck_or_blob(rng, label, size))
            rows.append({
                "index": len(rows), "patient_id": f"P_{patient:05d}", "case_id": f"P_{patient:05d}_LEFT_{view}",
                "side": "LEFT", "view": view, "abnormality_id": 1, "label": label,
                "abnormality_type": ("mass", "calcification")[label], "pathology": "BENIGN",
                "breast_density": 1 + patient % 4, "subtlety": 1 + patient % 5,
                "split": "train" if patient < train_patients else "test", "source_file": f"p{patient}_{view}.dcm",
            })  # fmt: skip
    manifest = pd.DataFrame(rows)[MANIFEST_COLUMNS]
    return write_prepared(
        root, patches=np.stack(patches), manifest=manifest, source="specks", options={"image_size": size, "seed": seed}
    )


@pytest.fixture
def dataset(tmp_path: Path) -> PreparedDataset:
    return make_speck_dataset(tmp_path / "prepared", train_patients=10, test_patients=4)


def small_config(**overrides):
    values = {"filters": "4-8", "dense_units": 0, "image_size": 32, "batch_size": 4, "augment": 0, "seed": 3}
    return make_config("model5", precision="float32", **(values | overrides))


def collect(data) -> tuple[np.ndarray, np.ndarray]:
    batches = list(data.as_numpy_iterator())
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def test_splits_are_disjoint_by_patient_and_keep_the_official_test_split(dataset: PreparedDataset) -> None:
    splits = make_datasets(dataset, small_config())
    train, val, test = splits.train_indices, splits.val_indices, splits.test_indices
    assert np.array_equal(test, dataset.split_indices("test"))
    assert np.array_equal(np.sort(np.concatenate([train, val])), dataset.split_indices("train"))
    patients = dataset.manifest["patient_id"].to_numpy()
    assert not set(patients[train]) & set(patients[val])  # the CC and MLO views stay together
    assert splits.train_steps == -(-len(train) // 4)  # ceil(train / batch 4)


def test_pixel_stats_are_the_train_rows_scaled_and_read_in_chunks(dataset: PreparedDataset) -> None:
    splits = make_datasets(dataset, small_config())
    pixels = np.asarray(dataset.patches[splits.train_indices], dtype=np.float64) / 65535.0
    assert splits.pixel_stats == pytest.approx((pixels.mean(), pixels.std()), rel=1e-9)
    rows = splits.train_indices[::-1]  # any order, any chunking: the same numbers
    assert pixel_stats(dataset.patches, rows, chunk=3) == pytest.approx(splits.pixel_stats, rel=1e-9)
    with pytest.raises(DataError, match="empty training split"):
        pixel_stats(dataset.patches, np.array([], dtype=np.int64))


def test_val_and_test_are_scaled_unaugmented_patches_in_index_order(dataset: PreparedDataset) -> None:
    splits = make_datasets(dataset, small_config(augment=1.0))
    for data, rows in ((splits.val, splits.val_indices), (splits.test, splits.test_indices)):
        images, labels = collect(data)
        assert images.shape == (len(rows), 32, 32, 1) and images.dtype == np.float32
        expected = np.asarray(dataset.patches[rows], dtype=np.float32)[..., None] / 65535.0
        np.testing.assert_allclose(images, expected, rtol=1e-6)
        assert np.array_equal(labels, dataset.labels[rows].astype(np.float32))


def test_no_split_runs_tf_data_autotuning(dataset: PreparedDataset) -> None:
    """Autotuning's model thread held the end of `model.fit` for 19–20 s (see `without_autotuning`); fit repeats train."""
    splits = make_datasets(dataset, small_config(augment=1.0))
    for data in (splits.train.repeat(), splits.val, splits.test):
        assert data.options().autotune.enabled is False
    assert len(collect(splits.train)[1]) == len(splits.train_indices)  # still every row, once an epoch


def test_augmentation_changes_the_train_split_only(dataset: PreparedDataset) -> None:
    plain, _ = collect(make_datasets(dataset, small_config(augment=0)).train)
    augmented, _ = collect(make_datasets(dataset, small_config(augment=1.0)).train)
    rows = make_datasets(dataset, small_config()).train_indices
    raw = np.asarray(dataset.patches[rows], dtype=np.float32)[..., None] / 65535.0
    # Without augmentation the train batches are the raw patches, shuffled; with it they are not.
    assert np.allclose(np.sort(plain.sum(axis=(1, 2, 3))), np.sort(raw.sum(axis=(1, 2, 3))), rtol=1e-5)
    assert not np.allclose(plain, augmented)
    assert augmented.min() >= 0.0 and augmented.max() <= 1.0 + 1e-6


def test_the_same_seed_gives_the_same_batches_and_epochs_reshuffle(dataset: PreparedDataset) -> None:
    def two_epochs(seed: int) -> list[np.ndarray]:
        keras.utils.set_random_seed(seed)
        data = make_datasets(dataset, small_config(augment=1.0, seed=seed)).train
        return [collect(data)[0] for _ in range(2)]

    first, again, other = two_epochs(3), two_epochs(3), two_epochs(4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], first[1])  # a new shuffle and new draws every epoch
    assert not np.array_equal(first[0], other[0])


def test_a_run_at_another_size_resizes_in_the_pipeline(tmp_path: Path) -> None:
    dataset = make_speck_dataset(tmp_path / "p40", size=40, train_patients=6, test_patients=2)
    images, _ = collect(make_datasets(dataset, small_config(image_size=32)).test)
    assert images.shape == (4, 32, 32, 1)
    np.testing.assert_allclose(images, scale_patches(np.asarray(dataset.patches[-4:]), image_size=32), atol=1e-6)


@pytest.mark.parametrize("stored_size", [32, 40])  # as stored, and resized to the run's 32 px
def test_training_grad_cam_and_serving_see_identical_arrays(tmp_path: Path, stored_size: int) -> None:
    from mammo.report.reports import _model_input
    from mammo.serve.serving import PatchClassifier

    dataset = make_speck_dataset(tmp_path / "p", size=stored_size, train_patients=6, test_patients=2)
    splits = make_datasets(dataset, small_config(image_size=32))
    trained_on, _ = collect(splits.test)  # what the tf.data pipeline feeds fit and evaluate
    raw = np.asarray(dataset.patches[splits.test_indices])
    explained = _model_input(raw, 32)  # what Grad-CAM differentiates
    served = PatchClassifier()
    served.image_size, served.model = 32, keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Flatten()])
    seen_by_serving = served.probabilities(raw).reshape(trained_on.shape)  # an identity network: its input back
    assert trained_on.shape == (len(raw), 32, 32, 1) and trained_on.dtype == explained.dtype == np.float32
    np.testing.assert_array_equal(trained_on, explained)
    np.testing.assert_array_equal(trained_on, seen_by_serving)
    assert trained_on.min() >= 0.0 and trained_on.max() <= 1.0 and trained_on.std() > 0


def test_a_dataset_without_test_patches_is_refused(tmp_path: Path) -> None:
    dataset = make_speck_dataset(tmp_path / "p", train_patients=4, test_patients=0)
    with pytest.raises(DataError, match=r"needs ≥ 2 train and ≥ 1 test patches, has 8 and 0"):
        make_datasets(dataset, small_config())


def test_scale_patches_accepts_a_channel_axis_and_rejects_other_shapes() -> None:
    patches = np.full((2, 8, 8), 65535, np.uint16)
    assert scale_patches(patches).shape == (2, 8, 8, 1) and scale_patches(patches).max() == 1.0
    assert np.array_equal(scale_patches(patches[..., None]), scale_patches(patches))
    with pytest.raises(DataError, match=r"\(n, S, S\) or \(n, S, S, 1\), got \(2, 8, 6\)"):
        scale_patches(np.zeros((2, 8, 6), np.uint16))


def test_augmentation_is_the_published_generator_as_layers() -> None:
    layers = augmentation(1.0, seed=0).layers
    assert [type(layer).__name__ for layer in layers] == ["RandomRotation", "CenteredShear", "RandomZoom", "RandomFlip"]
    rotation, shear, zoom, flip = layers
    assert rotation.factor == (-0.5, 0.5) and rotation.fill_mode == "reflect"  # ±180°
    assert shear.x_factor == pytest.approx((-0.17365, 0.17365), abs=1e-5) and shear.y_factor == (0.0, 0.0)  # sin 10°
    assert zoom.height_factor == (-0.2, 0.2) and zoom.width_factor == (-0.2, 0.2)
    assert flip.mode == "horizontal_and_vertical"
    half = augmentation(0.5, seed=0).layers
    assert half[0].factor == (-0.25, 0.25) and half[2].height_factor == (-0.1, 0.1)


def test_the_shear_keeps_the_centre_where_keras_corner_shear_would_move_it() -> None:
    image = np.zeros((1, 33, 33, 1), np.float32)
    image[0, 16, 16, 0] = 1.0  # the centre pixel
    image[0, 30, 16, 0] = 1.0  # a pixel far below it moves sideways under an x shear
    sheared = np.asarray(CenteredShear(x_factor=(0.3, 0.3), fill_mode="constant", seed=1)(image, training=True))
    assert sheared[0, 16, 16, 0] == pytest.approx(1.0)
    assert sheared[0, 30, 16, 0] < 0.5


def test_precision_auto_follows_the_hardware_and_an_explicit_choice_wins(tmp_path: Path) -> None:
    assert choose_precision("auto", flags={"avx2", "fma"}, gpus=0) == "float32"
    assert choose_precision("auto", flags={"avx512f", "avx512_bf16"}, gpus=0) == "mixed_bfloat16"
    assert choose_precision("auto", flags={"amx_bf16"}, gpus=0) == "mixed_bfloat16"
    assert choose_precision("auto", flags=set(), gpus=1) == "mixed_float16"
    assert choose_precision("mixed_bfloat16", flags=set(), gpus=0) == "mixed_bfloat16"
    with pytest.raises(ConfigError, match=r"precision='fp16' is invalid"):
        choose_precision("fp16")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "amx_bf16"} and cpu_flags(tmp_path / "none") == set()
    assert choose_precision("auto", flags=cpu_flags(cpuinfo), gpus=0) == "mixed_bfloat16"  # read from the file


@pytest.mark.slow
def test_a_stream_started_at_step_k_goes_on_as_the_whole_stream_would(dataset: PreparedDataset) -> None:
    """What a resumed run reads: the same shuffle and augmentation draws as the run that never stopped."""
    config = small_config(augment=1.0)

    def batches(start_step: int, count: int, *, whole_stream: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
        keras.utils.set_random_seed(config.seed)  # what fit does first, in a fresh or a resumed process
        splits = make_datasets(dataset, config)
        if whole_stream:  # the finite one-pass split, repeated: fit's input before it could start mid-way
            data = splits.train.repeat().skip(start_step)
        else:
            data = train_stream(dataset, config, splits.train_indices, start_step=start_step)
        return [(images.numpy(), labels.numpy()) for images, labels in data.take(count)]

    steps = make_datasets(dataset, config).train_steps
    whole = batches(0, 3 * steps, whole_stream=True)
    assert all(
        np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        for a, b in zip(batches(0, 3 * steps), whole, strict=True)
    )
    for start in (steps, 2 * steps + 1):  # an epoch boundary and mid-epoch
        resumed = batches(start, 3 * steps - start)
        assert all(
            np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
            for a, b in zip(resumed, whole[start:], strict=True)
        ), start
    assert not np.array_equal(whole[0][0], whole[steps][0])  # the epochs differ (reshuffled, new draws)
