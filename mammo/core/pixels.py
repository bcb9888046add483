"""The pixel convention every part shares: uint16 patches, scaled by 1/65535 for the network.

`prepare` stores patches as uint16 (0..PIXEL_MAX, 16-bit DICOM grey levels kept whole); training,
evaluation and the served model divide by PIXEL_MAX as the published project did, then resize to
the network's input side when a run trains at another size. The training pipeline (inside
tf.data), Grad-CAM and the served model all scale with `to_unit_range` and resize with `resizer`,
so they see identical arrays. Only numpy and Keras here, so the served model (which carries this
package) needs nothing more.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mammo.core.errors import DataError

PIXEL_MAX = 65535  # the top of the uint16 range: stored values lie in 0..PIXEL_MAX; the network sees value / PIXEL_MAX


def as_patch_batch(patches: np.ndarray) -> np.ndarray:
    """(n, S, S) or (n, S, S, 1) → (n, S, S); anything else is a DataError naming the shape."""
    array = np.asarray(patches)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3 or array.shape[1] != array.shape[2]:
        raise DataError(f"expected patches shaped (n, S, S) or (n, S, S, 1), got {array.shape}.")
    return array


def to_unit_range(images: Any) -> Any:
    """float32 grey levels (numpy or a tf.data tensor) → [0, 1]: one float32 division by PIXEL_MAX."""
    return images / PIXEL_MAX


def resizer(image_size: int) -> Any:  # keras.layers.Resizing
    """The resize to the network's side: Keras' anti-aliased bilinear one, always in float32.

    A Keras preprocessing layer runs eagerly on arrays and inside tf.data under any backend
    (`tf.image.resize(..., antialias=True)` under TensorFlow). Its dtype is fixed so a mixed
    precision policy never rounds the pixels before the model's own input.
    """
    import keras

    return keras.layers.Resizing(
        image_size, image_size, interpolation="bilinear", antialias=True, dtype="float32", name="resize"
    )


def scale_patches(patches: np.ndarray, *, image_size: int | None = None) -> np.ndarray:
    """Raw uint16 (n, S, S) or (n, S, S, 1) → float32 (n, S', S', 1) in [0, 1], as training sees them.

    The resize happens only when `image_size` differs from S.
    """
    array = as_patch_batch(patches)
    images = to_unit_range(array.astype(np.float32)[..., np.newaxis])  # (n, S, S, 1)
    if image_size is not None and image_size != array.shape[1]:
        import keras

        images = np.asarray(keras.ops.convert_to_numpy(resizer(image_size)(images)), dtype=np.float32)
    return images
