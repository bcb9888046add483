"""Grad-CAM: where in a patch the network found the evidence for its decision.

Grad-CAM (Selvaraju et al., 2017) weights each channel of the last convolutional feature map by
the mean gradient of the class score over that map, sums, keeps the positive part and upsamples it
to the input. The class explained is the one the model predicted (calcification when p > its
decision threshold, 0.5 by default, else mass), so a confidently wrong patch shows where the wrong evidence was. The score is the sigmoid's
logit where the output is a Dense sigmoid (every mammo variant): the probability saturates at 0 or 1
on exactly the confident patches we most want to explain, and its gradient vanishes there.

Pure TensorFlow/Keras and numpy, no MLflow: `reports.log_saliency` picks the patches and logs the
figures that `plots.plot_gradcam` draws from these maps.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import tensorflow as tf

from mammo.core.decision import DEFAULT_THRESHOLD

CONV_LAYERS = (keras.layers.Conv2D, keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D)
BATCH_SIZE = 32


def last_conv_layer(model: keras.Model) -> keras.layers.Layer:
    """The last 2-D convolution of `model`, found by walking its layers (no name is assumed).

    The study builds architectures with any number of blocks and names, and a model may start with a
    `standardize` Normalization layer, so the layer is found by type. Where the top level has none,
    the last nested model that has one is searched (a pretrained backbone used as one layer).

    Raises:
        ValueError: the model has no Conv2D-like layer, at its top level or in a nested model.
    """
    for layer in reversed(model.layers):
        if isinstance(layer, CONV_LAYERS) and len(layer.output.shape) == 4:
            return layer
    for layer in reversed(model.layers):
        if isinstance(layer, keras.Model):
            with contextlib.suppress(ValueError):
                return last_conv_layer(layer)
    raise ValueError(
        f"model {model.name!r} has no Conv2D/SeparableConv2D/DepthwiseConv2D layer, at its top level or in a nested "
        "model, so Grad-CAM has no feature map to weight; pass layer_name= naming a layer with a 4-D (batch, H, W, C) output."
    )


def _holder(model: keras.Model, layer: keras.layers.Layer) -> keras.Model | None:
    """The nested model of `model` whose own layers include `layer` (None when `layer` is top level)."""
    if any(candidate is layer for candidate in model.layers):
        return None
    for candidate in model.layers:
        if isinstance(candidate, keras.Model) and any(inner is layer for inner in candidate.layers):
            return candidate
    raise ValueError(
        f"layer {layer.name!r} is neither in model {model.name!r} nor one nested model deep; pass layer_name=."
    )


def _nested_score_model(model: keras.Model, layer: keras.layers.Layer, holder: keras.Model):
    """(features, what feeds the head) for a chain of layers where `holder`, one link, holds `layer`.

    A feature map inside a nested model is no output of the outer graph, so the outer layers are
    called one after another (mammo's backbone models are a single chain) and the nested one
    through a model that also returns the feature map.
    """
    inner = keras.Model(holder.inputs, [layer.output, holder.outputs[0]])
    chain = [link for link in model.layers if not isinstance(link, keras.layers.InputLayer)]

    def score(images: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        x, features = images, None
        for link in chain[:-1]:
            if link is holder:
                features, x = inner(x, training=training)
            else:
                x = link(x, training=training)
        return features, x

    return score, chain[-1]


def _score_model(model: keras.Model, layer: keras.layers.Layer) -> tuple[keras.Model, keras.layers.Layer | None]:
    """A model returning (feature map, what feeds the score) and the Dense sigmoid output layer, if any."""
    head = model.layers[-1]
    activation = getattr(head, "activation", None)
    if isinstance(head, keras.layers.Dense) and activation is keras.activations.sigmoid and head.units == 1:
        return keras.Model(model.inputs, [layer.output, head.input]), head
    return keras.Model(model.inputs, [layer.output, model.outputs[0]]), None


def gradcam(
    model: keras.Model, images: np.ndarray, *, layer_name: str | None = None, batch_size: int = BATCH_SIZE,
    threshold: float = DEFAULT_THRESHOLD,
) -> np.ndarray:  # fmt: skip
    """Grad-CAM maps of the predicted class, (n, H, W) float32 in [0, 1] at the input's resolution.

    Args:
        model: a Keras Functional model with one sigmoid output P(calcification); any dtype policy
            (mixed_float16 / mixed_bfloat16 features and gradients are cast to float32 before weighting).
        images: (n, H, W, C) exactly as the model takes them (for mammo: `pixels.scale_patches`).
        layer_name: the feature map to explain; default `last_conv_layer(model)`.
        batch_size: patches per gradient pass (memory stays bounded for any n).

    Each map is divided by its own maximum; a patch with no positive evidence gets an all-zero map.
    """
    array = np.asarray(images, dtype=np.float32)
    if array.ndim != 4:
        raise ValueError(f"images must be (n, H, W, C) as the model takes them, got shape {array.shape}")
    layer = _named_layer(model, layer_name) if layer_name else last_conv_layer(model)
    holder = _holder(model, layer)
    if holder is None:
        score_model, head = _score_model(model, layer)
    else:
        score_model, head = _nested_score_model(model, layer, holder)
        if not (isinstance(head, keras.layers.Dense) and head.activation is keras.activations.sigmoid):
            raise ValueError(f"model {model.name!r} must end in a Dense sigmoid for Grad-CAM inside a nested model.")
    maps = [
        _gradcam_batch(score_model, head, array[start : start + batch_size], threshold)
        for start in range(0, len(array), batch_size)
    ]
    if not maps:
        return np.zeros((0, *array.shape[1:3]), dtype=np.float32)
    return np.concatenate(maps)


def _named_layer(model: keras.Model, name: str) -> keras.layers.Layer:
    """`model.get_layer(name)`, or the layer of that name inside a nested model."""
    for layer in model.layers:
        if layer.name == name:
            return layer
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            with contextlib.suppress(ValueError):
                return _named_layer(layer, name)
    raise ValueError(f"no layer {name!r} in model {model.name!r} or its nested models")


def _gradcam_batch(
    score_model: keras.Model, head: keras.layers.Layer | None, images: np.ndarray, threshold: float
) -> np.ndarray:
    batch = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        features, feed = score_model(batch, training=False)  # (n, h, w, k), (n, units) or (n, 1)
        feed = tf.cast(feed, tf.float32)
        if head is not None:  # the logit: what the Dense computes before its sigmoid
            kernel, bias = tf.cast(head.kernel, tf.float32), tf.cast(head.bias, tf.float32)
            logit = tf.matmul(feed, kernel) + bias
            probability = tf.sigmoid(logit)
        else:
            probability = feed
            logit = feed
        # +score explains calcification, −score mass: whichever the model predicted.
        sign = tf.where(probability > threshold, 1.0, -1.0)
        score = tf.reduce_sum(sign * logit)
    gradients = tf.cast(tape.gradient(score, features), tf.float32)  # (n, h, w, k)
    features = tf.cast(features, tf.float32)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)  # (n, 1, 1, k): α_k per patch
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True))  # (n, h, w, 1)
    cam = tf.image.resize(cam, images.shape[1:3], method="bilinear")[..., 0]  # (n, H, W)
    peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
    return tf.math.divide_no_nan(cam, peak).numpy().astype(np.float32)
