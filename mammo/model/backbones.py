"""Pretrained backbones from `keras.applications` as variants: the table, the builder, the weights.

Every CBIS-DDSM mass-vs-calcification result above ~89 % starts from ImageNet weights, so the
backbones sit in the variants table next to Model 0–5 and train through the same `fit`. One
builder serves them all:

    grey patch (S, S, 1) in [0, 1]
      → `to_backbone_input`: ×255, repeated to 3 channels, then the backbone's own
        `preprocess_input` (read off that function, so VGG16's caffe means, ResNet50V2's [-1, 1]
        and DenseNet121's torch scaling are Keras's, not ours)
      → the backbone (include_top=False), called with training=False so its BatchNorm layers stay
        in inference mode in both fine-tuning phases (the Keras transfer-learning guide)
      → global average pooling → dropout → Dense(1, sigmoid, float32)

Weights: "imagenet" (Keras downloads and caches the file under KERAS_HOME/models), "none"
(random), or a path to a weights file (e.g. one downloaded elsewhere, or `save_weights` of a
backbone). With no network, "imagenet" fails at once with a WeightsError that names the file,
the cache folder and the path option.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from mammo.core.compat import recorded_downloads
from mammo.core.errors import ConfigError, MammoError

BACKBONE_LAYER = "backbone"  # the nested keras.applications model inside ours
INPUT_LAYER = "to_backbone_input"  # grey [0, 1] → what the backbone's preprocess_input returns
WEIGHT_SOURCES = ("imagenet", "none")  # or a path to a file
DEFAULT_IMAGE_SIZE = 224  # the size every ImageNet backbone was trained at


class WeightsError(MammoError):
    """Backbone weights cannot be had: no network for Keras's download, or no such file."""


@dataclass(frozen=True)
class Backbone:
    """One `keras.applications` architecture: how to build it and how its layers group into blocks."""

    application: str  # the keras.applications function, e.g. "EfficientNetB0"
    module: str  # its keras.applications submodule, whose preprocess_input we use
    block_pattern: str  # regex whose group 1 is a layer's block; layers that do not match join the block before


BACKBONES: dict[str, Backbone] = {
    "efficientnetb0": Backbone("EfficientNetB0", "efficientnet", r"^(block\d+[a-z])_"),
    "resnet50v2": Backbone("ResNet50V2", "resnet_v2", r"^(conv\d_block\d+)_"),
    "densenet121": Backbone("DenseNet121", "densenet", r"^(conv\d_block\d+)_"),
    "vgg16": Backbone("VGG16", "vgg16", r"^(block\d)_"),
    "mobilenetv3small": Backbone("MobileNetV3Small", "mobilenet_v3", r"^(expanded_conv(?:_\d+)?)_"),
}
"""The backbones offered as variants (the variant name is the key)."""


def backbone_for(config: Any) -> Backbone:  # a variants.TrainConfig (variants imports this module)
    if config.variant not in BACKBONES and config.backbone not in BACKBONES:
        raise ConfigError(f"no backbone {config.backbone!r}; choose one of {', '.join(BACKBONES)}.")
    return BACKBONES[config.backbone or config.variant]


# --- weights ------------------------------------------------------------------------------------


def keras_cache_dir() -> Path:
    """Where Keras keeps downloaded application weights: $KERAS_HOME/models (default ~/.keras/models)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def check_weights(weights: str) -> None:
    """'imagenet', 'none' or an existing file; a ConfigError naming the fix otherwise."""
    if weights in WEIGHT_SOURCES:
        return
    if not Path(weights).expanduser().is_file():
        raise ConfigError(
            f"parameter weights={weights!r}: no such file; use imagenet, none, or the path of a weights file "
            "(a .h5 / .weights.h5 file Keras can load into the backbone)."
        )


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class WeightsInfo:
    """Where a backbone's initial weights came from: logged as params and written on the model card."""

    source: str  # imagenet | none | the path given
    file: str  # the file loaded ("" for none)
    sha256: str  # of that file ("" for none)

    def params(self) -> dict[str, str]:
        return {"weights_file": self.file or "none", "weights_sha256": self.sha256 or "none"}


def _offline_message(backbone: Backbone, call: dict[str, str] | None, error: Exception) -> str:
    name = call["file"] if call else f"the {backbone.application} ImageNet weights"
    url = f" from {call['url']}" if call else ""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if call:  # Keras's "URL fetch failure on <url>: <errno> -- <reason>" without the URL a second time
        first_line = first_line.replace(f"URL fetch failure on {call['url']}: ", "")
    return (
        f"weights=imagenet: Keras could not download {name}{url} ({first_line}). Copy that file into "
        f"{keras_cache_dir()} (KERAS_HOME/models, where Keras looks first), or pass weights=/path/to/{name}, "
        "or weights=none to start from random weights."
    )


# --- the model ----------------------------------------------------------------------------------


@contextlib.contextmanager
def dtype_policy_scope(policy: str) -> Iterator[None]:
    """keras.applications take no dtype: build under `policy` and restore the global one afterwards."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def make_backbone(
    backbone: Backbone, *, image_size: int, weights: str, dtype_policy: str = "float32"
) -> tuple[keras.Model, WeightsInfo]:
    """The headless application at (S, S, 3), with its weights resolved and identified by hash."""
    check_weights(weights)
    build = getattr(keras.applications, backbone.application)
    arguments = {"include_top": False, "input_shape": (image_size, image_size, 3), "name": BACKBONE_LAYER}
    source = None if weights == "none" else weights if weights == "imagenet" else str(Path(weights).expanduser())
    with dtype_policy_scope(dtype_policy), recorded_downloads() as downloads:
        try:
            model = build(weights=source, **arguments)
        except Exception as error:  # get_file raises a bare Exception("URL fetch failure on ...")
            pending = next((call for call in downloads if not call["path"]), None)
            if weights == "imagenet" and pending is not None:
                raise WeightsError(_offline_message(backbone, pending, error)) from error
            raise
    if source is None:
        return model, WeightsInfo("none", "", "")
    loaded = Path(source) if weights != "imagenet" else Path(downloads[-1]["path"])
    return model, WeightsInfo(weights, str(loaded), file_sha256(loaded))


def preprocess_affine(backbone: Backbone) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) per output channel such that preprocess_input(g, g, g) = scale · g + offset.

    Read off the backbone's own `preprocess_input` at grey levels 0 and 255 (caffe's BGR reorder
    and mean subtraction, tf's [-1, 1], torch's mean/std, or identity where the model rescales
    itself), and checked to be affine at a third level, so the map can be a saved Normalization
    layer instead of a Lambda that a loaded model would refuse to run.
    """
    preprocess = getattr(keras.applications, backbone.module).preprocess_input
    levels = np.array([0.0, 255.0, 100.0], dtype=np.float32)
    grey = np.repeat(levels[:, None, None, None], 3, axis=-1)  # (3, 1, 1, 3)
    out = np.asarray(preprocess(grey.copy()), dtype=np.float64).reshape(3, 3)
    offset, scale = out[0], (out[1] - out[0]) / 255.0
    if not np.allclose(out[2], scale * 100.0 + offset, atol=1e-4):
        raise ConfigError(f"{backbone.module}.preprocess_input is not affine on grey levels; it cannot be a layer.")
    return scale, offset


def to_backbone_input(backbone: Backbone, image_size: int) -> keras.Model:
    """(S, S, 1) in [0, 1] → (S, S, 3) as the backbone's preprocess_input returns it, in float32."""
    scale, offset = preprocess_affine(backbone)
    inputs = keras.Input(shape=(image_size, image_size, 1), name="grey")
    grey = keras.layers.Rescaling(255.0, name="to_0_255")(inputs)  # the 8-bit range ImageNet models expect
    rgb = keras.layers.Concatenate(axis=-1, name="to_rgb")([grey, grey, grey])  # (batch, S, S, 3)
    # (x − mean) / √variance = scale · x + offset
    normalized = keras.layers.Normalization(
        axis=-1, mean=(-offset / scale).tolist(), variance=(1.0 / scale**2).tolist(), name="preprocess_input"
    )(rgb)
    return keras.Model(inputs, normalized, name=INPUT_LAYER)


def build_backbone_model(config: Any, *, dtype_policy: str) -> tuple[keras.Model, WeightsInfo]:
    """The variant's backbone with our input and head; the backbone starts frozen (phase 1)."""
    backbone = backbone_for(config)
    base, info = make_backbone(
        backbone, image_size=config.image_size, weights=config.weights, dtype_policy=dtype_policy
    )
    base.trainable = False
    inputs = keras.Input(shape=(config.image_size, config.image_size, 1), name="patch")  # (batch, S, S, 1)
    x = to_backbone_input(backbone, config.image_size)(inputs)  # (batch, S, S, 3)
    x = base(x, training=False)  # BatchNorm in inference mode, also once unfrozen
    x = keras.layers.GlobalAveragePooling2D(dtype=dtype_policy, name="pool")(x)
    if config.dropout > 0:
        x = keras.layers.Dropout(config.dropout, dtype=dtype_policy, name="dropout")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="p_calcification")(x)  # (batch, 1)
    return keras.Model(inputs, outputs, name=config.variant), info


def backbone_layer(model: keras.Model) -> keras.Model:
    return model.get_layer(BACKBONE_LAYER)


def block_names(model: keras.Model, pattern: str) -> list[str]:
    """The block of each of the backbone's layers, in order (the stem is block 'stem')."""
    regex = re.compile(pattern)
    current, blocks = "stem", []
    for layer in model.layers:
        match = regex.match(layer.name)
        current = match.group(1) if match else current
        blocks.append(current)
    return blocks


def count_blocks(model: keras.Model, backbone: Backbone) -> int:
    return len(dict.fromkeys(name for name in block_names(backbone_layer(model), backbone.block_pattern)))


def unfreeze_top_blocks(model: keras.Model, backbone: Backbone, blocks: int) -> list[str]:
    """Make the backbone's last `blocks` blocks trainable, BatchNorm layers excepted; returns their names.

    BatchNorm stays frozen as in Keras's EfficientNet fine-tuning example: its statistics come from
    ImageNet and a small batch of patches would overwrite them.
    """
    base = backbone_layer(model)
    names = block_names(base, backbone.block_pattern)
    order = list(dict.fromkeys(names))
    if not 0 <= blocks <= len(order):
        raise ConfigError(
            f"parameter unfreeze_blocks={blocks} is invalid: {backbone.application} has {len(order)} blocks "
            f"({order[0]} … {order[-1]}); use 0..{len(order)}."
        )
    chosen = set(order[len(order) - blocks :]) if blocks else set()
    base.trainable = True
    for layer, block in zip(base.layers, names, strict=True):
        layer.trainable = block in chosen and not isinstance(layer, keras.layers.BatchNormalization)
    return [name for name in order if name in chosen]
