"""tf.data input from the memory-mapped prepared dataset, standardisation statistics, augmentation layers.

Pixels are read batch by batch from `patches.npy` (never loaded whole), scaled by 1/65535 like
the published project, resized only when the run asks for another image size, and augmented on
the training split alone with seeded Keras `Random*` layers (the published project also
augmented its validation images; we do not).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from mammo.core.compat import ShearImagesHook
from mammo.core.errors import DataError
from mammo.core.pixels import PIXEL_MAX, resizer, to_unit_range
from mammo.data.splits import split_validation
from mammo.data.store import PreparedDataset
from mammo.model.variants import TrainConfig

AUTOTUNE = tf.data.AUTOTUNE
# The published ImageDataGenerator: rotation_range=180, shear_range=10 (degrees), zoom_range=0.2,
# horizontal_flip, vertical_flip, fill_mode='reflect'.
ROTATION_DEGREES = 180.0
SHEAR_DEGREES = 10.0
ZOOM_RANGE = 0.2


@dataclass(frozen=True)
class Splits:
    """Batched (images, labels) datasets and the positional rows of dataset.patches behind each."""

    train: tf.data.Dataset  # shuffled each epoch, augmented: ((batch, S, S, 1) float32, (batch,) float32)
    val: tf.data.Dataset  # fixed order, not augmented, cached
    test: tf.data.Dataset  # fixed order, not augmented, cached
    train_indices: np.ndarray
    val_indices: np.ndarray
    test_indices: np.ndarray
    image_size: int
    pixel_stats: tuple[float, float] | None  # mean, std of the train split's [0, 1] pixels; None unless standardize
    train_steps: int  # batches in one pass over `train`: fit repeats it and counts epochs in these


def make_datasets(dataset: PreparedDataset, config: TrainConfig) -> Splits:
    """Official train/test split, validation carved from train (by patient unless asked otherwise)."""
    train_rows = dataset.split_indices("train")
    test_rows = dataset.split_indices("test")
    if len(train_rows) < 2 or len(test_rows) < 1:
        raise DataError(
            f"{dataset.path}: needs ≥ 2 train and ≥ 1 test patches, has {len(train_rows)} and {len(test_rows)}; "
            "prepare a larger dataset."
        )
    train_pos, val_pos = split_validation(
        dataset.manifest.iloc[train_rows], val_fraction=config.val_fraction, seed=config.seed,
        split_by=config.split_by, fold=config.fold, folds=config.folds,
    )  # fmt: skip
    build = functools.partial(_batched, dataset=dataset, config=config)
    train_idx, val_idx = train_rows[train_pos], train_rows[val_pos]
    return Splits(
        train=build(train_idx, training=True),
        val=build(val_idx, training=False),
        test=build(test_rows, training=False),
        train_indices=train_idx,
        val_indices=val_idx,
        test_indices=test_rows,
        image_size=config.image_size,
        pixel_stats=pixel_stats(dataset.patches, train_idx) if config.standardize else None,
        train_steps=math.ceil(len(train_idx) / config.batch_size),
    )


def pixel_stats(patches: np.ndarray, rows: np.ndarray, *, chunk: int = 256) -> tuple[float, float]:
    """Mean and standard deviation of `patches[rows]` after the /65535 scaling, read chunk by chunk.

    These are ImageDataGenerator's featurewise_center / featurewise_std_normalization statistics,
    taken from the rows the model trains on (never validation or test), at the stored size.
    """
    if len(rows) == 0:
        raise DataError("cannot standardise on an empty training split; prepare a larger dataset.")
    total = total_sq = 0.0
    count = 0
    for start in range(0, len(rows), chunk):
        block = np.asarray(patches[np.sort(rows[start : start + chunk])], dtype=np.float64) / PIXEL_MAX
        total += float(block.sum())
        total_sq += float(np.square(block).sum())
        count += block.size
    mean = total / count
    return mean, math.sqrt(max(total_sq / count - mean**2, 0.0))


def train_stream(dataset: PreparedDataset, config: TrainConfig, indices: np.ndarray, *, start_step: int = 0):
    """The endless training input `fit` reads, from step `start_step` on (where a resumed run goes on).

    Epoch e's order is the e-th reshuffle of one seeded shuffle and its augmentation the next draws
    of the seeded Random* layers, so the stream started at step k gives exactly the batches k, k+1, …
    of the stream started at 0: the index batches before k are skipped before any pixel is read,
    and the layers' seed counters are moved on by k steps' draws (`advance_draws`).
    """
    return _batched(indices, dataset=dataset, config=config, training=True, start_step=start_step)


def advance_draws(augmenter: keras.Sequential, *, steps: int) -> None:
    """Move the augmentation layers' seed counters on by `steps` batches' draws, as if they had run.

    Each Random* layer draws from a SeedGenerator whose state advances by a fixed count per call,
    whatever the batch holds; one call on a dummy batch measures the count.
    """
    if steps <= 0:
        return
    before = [np.array(variable) for variable in augmenter.variables]
    augmenter(tf.zeros((1, 8, 8, 1)), training=True)
    for variable, start in zip(augmenter.variables, before, strict=True):
        variable.assign(start + steps * (np.array(variable) - start))


def _batched(
    indices: np.ndarray, *, dataset: PreparedDataset, config: TrainConfig, training: bool,
    start_step: int | None = None,
) -> tf.data.Dataset:  # fmt: skip
    """One pass over `indices` in batches; with `start_step`, the endless stream from that step on."""
    labels = dataset.labels[indices].astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((indices.astype(np.int64), labels))
    if training:
        data = data.shuffle(len(indices), seed=config.seed, reshuffle_each_iteration=True)
    resize = resizer(config.image_size) if dataset.patches.shape[1] != config.image_size else None
    load = functools.partial(_load_batch, patches=dataset.patches, resize=resize)
    data = data.batch(config.batch_size)
    if start_step is not None:  # each repetition reshuffles; skipped batches are indices only
        data = data.repeat().skip(start_step)
    data = data.map(load, num_parallel_calls=AUTOTUNE)
    if not training:
        return without_autotuning(data.cache().prefetch(AUTOTUNE))
    if config.augment > 0:
        augmenter = augmentation(config.augment, config.seed)
        advance_draws(augmenter, steps=start_step or 0)
        # One call at a time: the Random* layers draw from a stateful SeedGenerator, and a parallel
        # map hands those draws out in a racing order (measured: two same-seed runs differed).
        # Augmenting a batch takes milliseconds against ~1 s for a training step, and prefetch
        # overlaps it with training, so reproducibility costs nothing measurable.
        data = data.map(lambda images, y: (augmenter(images, training=True), y), num_parallel_calls=None)
    return without_autotuning(data.prefetch(AUTOTUNE))


def without_autotuning(data: tf.data.Dataset) -> tf.data.Dataset:
    """`data` with tf.data's autotuning off: AUTOTUNE then means min(16, cores) parallel calls, fixed.

    Autotuning runs a model thread beside each iterator, and the iterator's destructor joins it. At
    the end of `model.fit` (TF 2.21) that join waited 19–20 s with both cores idle in 3 of 5 float32
    runs of model5 on the 2-core Xeon (fit 42 s instead of 23 s) and 0 of 5 with autotuning off, at
    the same speed: on 2 cores there is nothing for it to tune (`docs/performance.md`).
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return data.with_options(options)


def _load_batch(indices: tf.Tensor, labels: tf.Tensor, *, patches: np.ndarray, resize: keras.Layer | None):
    """Read one batch of rows from the memmap, scale to [0, 1], add the channel, resize if asked.

    The scaling and the resize are `mammo.core.pixels`' (what Grad-CAM and the served model apply).
    """
    size = patches.shape[1]
    raw = tf.numpy_function(lambda rows: np.asarray(patches[rows]), [indices], tf.uint16, stateful=False)
    raw = tf.ensure_shape(raw, (None, size, size))  # (batch, S0, S0) uint16
    images = to_unit_range(tf.cast(raw, tf.float32)[..., tf.newaxis])  # (batch, S0, S0, 1)
    return (images if resize is None else resize(images)), labels


class CenteredShear(ShearImagesHook, keras.layers.RandomShear):
    """RandomShear about the image centre, as ImageDataGenerator sheared.

    Keras' RandomShear shears about the top-left corner, which also shifts the patch by up to
    sin(10°)·S ≈ 26 px at S = 150; the centring offset keeps the lesion where it was.
    """

    def shear_images(self, images, transformation, interpolation):
        if transformation is None:
            return images
        ops = self.backend.numpy
        unbatched = len(self.backend.shape(images)) == 3
        if unbatched:
            images = ops.expand_dims(images, axis=0)
        shape = self.backend.shape(images)  # (batch, H, W, C) or (batch, C, H, W)
        height, width = (shape[1], shape[2]) if self.data_format == "channels_last" else (shape[2], shape[3])
        centre_y = (self.backend.cast(height, self.compute_dtype) - 1.0) / 2.0
        centre_x = (self.backend.cast(width, self.compute_dtype) - 1.0) / 2.0
        shear = transformation["shear_factor"]
        shear_x, shear_y = shear[:, 0], shear[:, 1]
        zeros, ones = ops.zeros_like(shear_x), ops.ones_like(shear_x)
        # Output (x, y) samples the input at (x + s_x (y − c_y), y + s_y (x − c_x)).
        matrix = ops.stack(
            [ones, shear_x, -shear_x * centre_y, shear_y, ones, -shear_y * centre_x, zeros, zeros], axis=1
        )
        outputs = self.backend.image.affine_transform(
            images, transform=matrix, interpolation=interpolation, fill_mode=self.fill_mode,
            fill_value=self.fill_value, data_format=self.data_format,
        )  # fmt: skip
        return ops.squeeze(outputs, axis=0) if unbatched else outputs


def augmentation(strength: float, seed: int) -> keras.Sequential:
    """The published ImageDataGenerator as Keras layers; `strength` scales every range (1.0 = published).

    rotation ±180°·s, shear ±10°·s about the centre (x axis, as ImageDataGenerator), zoom
    1 ± 0.2·s on each axis independently, horizontal and vertical flips, 'reflect' fill. Each
    layer gets its own seed derived from `seed`, so the whole chain is reproducible.
    """
    shear = math.sin(math.radians(SHEAR_DEGREES * strength))
    zoom = ZOOM_RANGE * strength
    return keras.Sequential(
        [
            keras.layers.RandomRotation(ROTATION_DEGREES * strength / 360.0, fill_mode="reflect", seed=seed),
            CenteredShear(x_factor=shear, y_factor=0.0, fill_mode="reflect", seed=seed + 1),
            keras.layers.RandomZoom((-zoom, zoom), (-zoom, zoom), fill_mode="reflect", seed=seed + 2),
            keras.layers.RandomFlip("horizontal_and_vertical", seed=seed + 3),
        ],
        name="augmentation",
    )
