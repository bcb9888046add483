"""Grad-CAM on tiny models whose weights are set by hand, so where the evidence lies is known."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from mammo.model.variants import build_model, make_config
from mammo.report import saliency

SIZE = 40
LESION = (slice(6, 12), slice(25, 31))  # rows 6–11, columns 25–30: off-centre, and not on the diagonal


def bright_lesion_detector(policy: str = "float32") -> keras.Model:
    """Two conv blocks that respond to bright blobs only, then Flatten → Dense(1, sigmoid).

    conv1 averages 3×3 and fires above 0.5 (background 0.2 stays silent); conv2 averages again;
    the Dense sums everything with weight +1, so P(calcification) rises with a bright blob's size.
    """
    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Conv2D(2, 3, activation="relu", dtype=policy, name="first")(inputs)
    x = keras.layers.MaxPooling2D(2, dtype=policy)(x)
    x = keras.layers.Conv2D(2, 3, activation="relu", dtype=policy, name="second")(x)
    x = keras.layers.MaxPooling2D(2, dtype=policy)(x)
    x = keras.layers.Flatten(dtype=policy)(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="head")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("first").set_weights([np.full((3, 3, 1, 2), 1 / 9, np.float32), np.full(2, -0.5, np.float32)])
    model.get_layer("second").set_weights([np.full((3, 3, 2, 2), 1 / 18, np.float32), np.full(2, -0.1, np.float32)])
    head = model.get_layer("head")
    head.set_weights([np.ones(head.kernel.shape, np.float32), np.array([-0.5], np.float32)])
    return model


def patch_with_lesion() -> np.ndarray:
    image = np.full((1, SIZE, SIZE, 1), 0.2, np.float32)  # (1, 40, 40, 1)
    image[0, LESION[0], LESION[1], 0] = 1.0
    return image


def assert_peaks_on_lesion(heatmap: np.ndarray) -> None:
    row, column = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    assert LESION[0].start <= row < LESION[0].stop and LESION[1].start <= column < LESION[1].stop, (row, column)
    inside = np.zeros(heatmap.shape, bool)
    inside[LESION] = True
    assert heatmap[inside].mean() > 5 * heatmap[~inside].mean()  # the evidence is there, not smeared everywhere


def test_the_map_of_a_patch_peaks_on_its_lesion_at_input_resolution() -> None:
    model = bright_lesion_detector()
    image = patch_with_lesion()
    assert float(model.predict(image, verbose=0)[0, 0]) > 0.5  # the lesion makes it a calcification
    maps = saliency.gradcam(model, image)
    assert maps.shape == (1, SIZE, SIZE) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() == pytest.approx(1.0)
    assert_peaks_on_lesion(maps[0])
    moved = np.flip(image, axis=(1, 2)).copy()  # the lesion elsewhere: the map follows it
    flipped_map = saliency.gradcam(model, moved)[0]
    np.testing.assert_allclose(np.flip(flipped_map), maps[0], atol=0.2)


def test_batches_give_the_same_maps_as_one_pass_and_a_blank_patch_has_no_evidence() -> None:
    model = bright_lesion_detector()
    images = np.concatenate([patch_with_lesion(), np.full((1, SIZE, SIZE, 1), 0.2, np.float32)] * 3)
    one_pass = saliency.gradcam(model, images)
    np.testing.assert_allclose(saliency.gradcam(model, images, batch_size=2), one_pass, atol=1e-6)
    assert not one_pass[1].any()  # nothing bright: no positive evidence, an all-zero map rather than noise
    assert saliency.gradcam(model, images[:0]).shape == (0, SIZE, SIZE)
    with pytest.raises(ValueError, match=r"\(n, H, W, C\)"):
        saliency.gradcam(model, images[:, :, :, 0])


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_models_give_the_float32_map(policy: str) -> None:
    reference = bright_lesion_detector()
    mixed = bright_lesion_detector(policy)
    mixed.set_weights(reference.get_weights())
    assert mixed.get_layer("second").compute_dtype != "float32"
    maps = saliency.gradcam(mixed, patch_with_lesion())
    assert maps.dtype == np.float32
    assert_peaks_on_lesion(maps[0])
    np.testing.assert_allclose(maps, saliency.gradcam(reference, patch_with_lesion()), atol=0.05)


@pytest.mark.parametrize(
    ("filters", "standardize", "last"),
    [((8, 16), False, "conv2"), ((8, 16, 16), True, "conv3"), ((4, 8, 8, 8), True, "conv4")],
)
def test_the_last_conv_layer_is_found_on_every_variant_shape(filters: tuple, standardize: bool, last: str) -> None:
    config = make_config("model5", filters=filters, image_size=48, standardize=standardize, precision="float32")
    model = build_model(config, dtype_policy="float32", pixel_stats=(0.5, 0.2) if standardize else None)
    assert saliency.last_conv_layer(model).name == last
    maps = saliency.gradcam(model, np.random.default_rng(0).random((3, 48, 48, 1), dtype=np.float32))
    assert maps.shape == (3, 48, 48) and maps.min() >= 0.0 and maps.max() <= 1.0


def test_a_model_without_convolutions_is_refused_with_the_fix() -> None:
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(inputs))
    with pytest.raises(ValueError, match="pass layer_name="):
        saliency.last_conv_layer(keras.Model(inputs, outputs))
