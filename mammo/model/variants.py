"""Model 0–5 as data: one table of hyperparameters, one typed config, one Functional builder.

The published series changed one thing per model; here each model is a row of `VARIANTS`, the
run-length settings come from a `schedule` ("quick" for a 2-core CPU, "published" for the
paper's 500 epochs), and any field can be overridden from the CLI or an Optuna trial through
`make_config`, which rejects unknown names and bad values with a ConfigError naming the parameter.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any

import keras

from mammo.core.booleans import parse_boolean
from mammo.core.errors import ConfigError
from mammo.core.precision import PRECISIONS
from mammo.data.splits import SPLIT_MODES
from mammo.model.backbones import BACKBONES, DEFAULT_IMAGE_SIZE, check_weights
from mammo.model.feature_maps import feature_size, min_image_size

OPTIMIZERS = ("adam", "rmsprop")

_BASE: dict[str, Any] = {
    "filters": (32, 64), "dense_units": 0, "dropout": 0.0, "l2": 0.0, "optimizer": "adam",
    "learning_rate": 1e-3, "lr_decay": 0.0, "batch_size": 32, "early_stopping": False, "augment": 0.0,
}  # fmt: skip
_MODEL3 = {"filters": (32, 64, 128), "dense_units": 48, "dropout": 0.5, "optimizer": "rmsprop",
           "lr_decay": 1e-3, "batch_size": 128, "early_stopping": True, "augment": 1.0}  # fmt: skip

VARIANTS: dict[str, dict[str, Any]] = {
    "model0": dict(_BASE),
    "model1": _BASE | {"dropout": 0.5},
    "model2": _BASE | {"dropout": 0.5, "augment": 1.0},
    "model3": _BASE | _MODEL3,
    "model4": _BASE | _MODEL3 | {"filters": (32, 64, 128, 256)},
    "model5": _BASE | _MODEL3 | {"filters": (32, 64, 128, 256), "l2": 5e-5},
}
"""The six published variants, each one change on top of the previous one.

Known from the publication (and the sibling 4-class notebook): model4 is Conv2D 32-64-128-256
(3×3 valid, relu, MaxPool 2×2 after each) → Flatten → Dense(48, relu) → Dropout(0.5) →
Dense(1, sigmoid), 990,049 parameters at 150×150×1; model5 adds L2(5e-5) on every Conv2D kernel;
model3 is model4 without the 256 block and introduced Dense(48), early stopping (val_loss,
best weights kept), batch 128 and RMSprop(1e-3, decay 1e-3) = InverseTimeDecay(1e-3, 1, 1e-3);
model2 introduced the augmentation (`augment=1.0` = the published ImageDataGenerator strength).

Inferred (the text does not say; the smallest reading consistent with "model3 adds ..."):
model0 is Conv2D 32-64 with the same 3×3/MaxPool blocks → Flatten → Dense(1, sigmoid), i.e. no
hidden Dense (model3 "adds" Dense(48)) and no dropout; model1 puts its Dropout(0.5) between
Flatten and the output; models 0–2 use Adam(1e-3) without decay (RMSprop with decay arrives in
model3), Keras' default batch of 32 and no early stopping (it arrives in model3), though their
best-val_loss epoch is still reported as the "opt" checkpoint next to the last ("end") epoch.
"""

# Pretrained backbones (mammo.model.backbones): the Keras transfer-learning guide's recipe, Adam 1e-3 for the
# head with the backbone frozen, then the top blocks at 1e-5; dropout 0.2 before the head as there.
_BACKBONE = _BASE | {
    "filters": (), "dropout": 0.2, "early_stopping": True, "augment": 1.0, "image_size": DEFAULT_IMAGE_SIZE,
    "weights": "imagenet", "unfreeze_blocks": 2, "finetune_learning_rate": 1e-5,
}  # fmt: skip
BACKBONE_VARIANTS: dict[str, dict[str, Any]] = {name: _BACKBONE | {"backbone": name} for name in BACKBONES}
"""Pretrained backbones as variants: trained on request (train --variant, train_all --variants), never by default."""
ALL_VARIANTS = VARIANTS | BACKBONE_VARIANTS

SCHEDULES: dict[str, dict[str, Any]] = {
    # quick: sized for `mlflow run . -e train` on 2 CPU cores in under 5 minutes, first-use prepare
    # included (model5 at 150×150 trains at ~30 img/s there, ~25 s per epoch of ~730 synthetic
    # patches; measured: over 10 epochs the best val_loss came at epoch 8, so the schedule stops
    # there, and 8 epochs gave 90.2 % test accuracy).
    # Batch 32 learned fastest of 16/32/128 in a GPU sweep of model5's recipe on the synthetic data.
    # `standardize` centres and scales the input with the training split's pixel mean/std (a Keras
    # Normalization layer, no weights): with only the published /65535 scaling, model5 sat at chance
    # for 5+ epochs (inputs ≈ 0.52 ± 0.15, so the Glorot-initialised stack passes almost only the DC
    # level: at init the output varied by ±0.002 across patches) and reached 51 % test accuracy
    # after 5 epochs; standardised, 89 % (measured on the synthetic default).
    "quick": {"epochs": 8, "patience": 5, "batch_size": 32, "standardize": True},
    # published: as in the paper (batch 128 only where the variant used it, i.e. model3+; /65535 only).
    "published": {"epochs": 500, "patience": 80, "standardize": False},
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on; flattened once by `params()` for log_params."""

    variant: str
    filters: tuple[int, ...]
    dense_units: int
    dropout: float
    l2: float
    optimizer: str
    learning_rate: float
    lr_decay: float
    batch_size: int
    epochs: int
    patience: int
    augment: float
    image_size: int = 150
    split_by: str = "patient"
    val_fraction: float = 0.2
    seed: int = 0
    precision: str = "auto"
    schedule: str = "quick"
    standardize: bool = False  # input (x − mean) / std of the training split, after the /65535 scaling
    threshold: str = "fixed"  # decision threshold, chosen on validation: fixed (0.5), youden, sensitivity:<target>
    folds: int = 0  # cross-validation (train_all --folds): validation is fold `fold` of `folds` patient folds
    fold: int = 0
    backbone: str = ""  # a mammo.model.backbones name; "" = the from-scratch Conv2D family
    weights: str = "none"  # backbone start: imagenet, none, or a weights file's path
    unfreeze_blocks: int = 0  # backbone blocks (from the top) trained in phase 2
    finetune_learning_rate: float = 1e-5  # phase 2's learning rate
    head_epochs: int = 0  # phase 1 epochs (head only); 0 = half of `epochs`, rounded up

    def params(self) -> dict[str, str | int | float]:
        """The run's MLflow params (tracking.PARAM_NAMES less the data ones, + schedule/precision/optimizer)."""
        values = dataclasses.asdict(self)
        values["filters"] = "-".join(str(count) for count in self.filters)
        if not self.folds:  # fold/folds only mean something in a cross-validated run
            del values["fold"], values["folds"]
        for name in BACKBONE_FIELDS if not self.backbone else ("filters",):
            del values[name]  # a backbone has no filters; a scratch model no backbone settings
        return values


BACKBONE_FIELDS = ("backbone", "weights", "unfreeze_blocks", "finetune_learning_rate", "head_epochs")
_FIELD_TYPES = {field.name: field.type for field in fields(TrainConfig)}


def make_config(variant: str = "model5", *, schedule: str = "quick", **overrides: Any) -> TrainConfig:
    """The variant's row + the schedule + overrides (None means "variant default").

    Overrides may be CLI strings ("32-64-128-256", "1e-3", "true"); each is parsed to the field's
    type and range-checked, so a typo fails here, before any data is read.
    """
    if variant not in ALL_VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; choose one of {', '.join(ALL_VARIANTS)}.")
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}.")
    unknown = sorted(set(overrides) - set(_FIELD_TYPES) - {"variant", "schedule"})
    if unknown:
        raise ConfigError(f"unknown parameter(s) {unknown}; known: {', '.join(_FIELD_TYPES)}.")
    row = dict(ALL_VARIANTS[variant])
    plan = SCHEDULES[schedule]
    values: dict[str, Any] = {key: value for key, value in row.items() if key != "early_stopping"}
    values["epochs"] = plan["epochs"]
    values["patience"] = plan["patience"] if row["early_stopping"] else 0
    values["batch_size"] = plan.get("batch_size", row["batch_size"])
    values["standardize"] = plan["standardize"] and not row.get("backbone")  # a backbone has its own scaling
    for name, raw in overrides.items():
        if raw is not None:
            values[name] = _parse(name, raw)
    config = TrainConfig(variant=variant, schedule=schedule, **values)
    _validate(config)
    return config


def _parse(name: str, raw: Any) -> Any:
    kind = _FIELD_TYPES[name]
    try:
        if kind == "tuple[int, ...]":
            return _parse_filters(raw)
        if kind == "int":
            return _parse_int(raw)
        if kind == "float":
            return _parse_float(raw)
        if kind == "bool":
            return _parse_bool(raw)
        if not isinstance(raw, str):
            raise TypeError(f"expected text, got {type(raw).__name__}")
        return raw
    except (TypeError, ValueError) as error:
        raise ConfigError(f"parameter {name}: cannot use {raw!r} ({error}).") from None


def _parse_filters(raw: Any) -> tuple[int, ...]:
    if isinstance(raw, str):
        parts = [part for part in raw.replace(",", "-").split("-") if part.strip()]
        return tuple(_parse_int(part.strip()) for part in parts)
    if isinstance(raw, (list, tuple)):
        return tuple(_parse_int(part) for part in raw)
    raise TypeError("expected filter counts like '32-64-128-256'")


def _parse_int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise TypeError("expected an integer, got a boolean")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str):
        return int(raw.strip())
    raise TypeError(f"expected an integer, got {type(raw).__name__}")


def _parse_float(raw: Any) -> float:
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    if isinstance(raw, (int, float)):
        return float(raw)
    if isinstance(raw, str):
        text = raw.strip().lower()
        if text == "none":
            return 0.0
        with contextlib.suppress(ValueError):
            return float(parse_boolean(text))
        value = float(text)
        if not math.isfinite(value):
            raise ValueError("expected a finite number")
        return value
    raise TypeError(f"expected a number, got {type(raw).__name__}")


def _parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, (int, float)) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str):
        return parse_boolean(raw)
    raise ValueError("expected true or false")


def _validate(config: TrainConfig) -> None:
    """Range checks with the fix in the message (optuna's style: name=value and the allowed range)."""
    checks = [
        (bool(config.backbone) or (len(config.filters) >= 1 and all(count >= 1 for count in config.filters)),
         "filters", "positive counts like 32-64-128"),
        (config.dense_units >= 0, "dense_units", "≥ 0 (0 = no hidden Dense layer)"),
        (0.0 <= config.dropout < 1.0, "dropout", "in [0, 1) (0 = no Dropout layer)"),
        (config.l2 >= 0.0, "l2", "≥ 0"),
        (config.optimizer in OPTIMIZERS, "optimizer", f"one of {OPTIMIZERS}"),
        (config.learning_rate > 0.0, "learning_rate", "> 0"),
        (config.lr_decay >= 0.0, "lr_decay", "≥ 0"),
        (config.batch_size >= 1, "batch_size", "≥ 1"),
        (config.epochs >= 1, "epochs", "≥ 1"),
        (config.patience >= 0, "patience", "≥ 0 (0 = no early stopping)"),
        (0.0 <= config.augment <= 4.0, "augment", "in [0, 4] (0 = off, 1 = the published strength)"),
        (16 <= config.image_size <= 1024, "image_size", "in [16, 1024]"),
        (config.split_by in SPLIT_MODES, "split_by", f"one of {SPLIT_MODES}"),
        (0.0 < config.val_fraction < 1.0, "val_fraction", "in (0, 1)"),
        (config.seed >= 0, "seed", "≥ 0"),
        (config.precision in PRECISIONS, "precision", f"one of {PRECISIONS}"),
        (_threshold_ok(config.threshold), "threshold", "fixed (0.5), youden, or sensitivity:<target in (0, 1]>"),
        (config.folds == 0 or config.folds >= 2, "folds", "0 (no cross-validation) or ≥ 2"),
        (0 <= config.fold < max(config.folds, 1), "fold", "in 0..folds-1"),
    ]  # fmt: skip
    if config.backbone:
        checks += _backbone_checks(config)
    for ok, name, allowed in checks:
        if not ok:
            raise ConfigError(f"parameter {name}={getattr(config, name)!r} is invalid: must be {allowed}.")
    if config.backbone:
        check_weights(config.weights)
        return
    side = feature_size(config.image_size, len(config.filters))
    if side < 1:
        minimum = max(16, min_image_size(len(config.filters)))
        raise ConfigError(
            f"parameter image_size={config.image_size} is too small for {len(config.filters)} conv blocks "
            f"(3×3 valid conv + 2×2 pool each): use image_size ≥ {minimum} or fewer filters."
        )


def _backbone_checks(config: TrainConfig) -> list[tuple[bool, str, str]]:
    return [
        (config.backbone in BACKBONES, "backbone", f"one of {', '.join(BACKBONES)}"),
        (config.image_size >= 32, "image_size", "≥ 32 for a pretrained backbone (224 as it was trained)"),
        (not config.standardize, "standardize", "false for a backbone (it applies its own preprocess_input)"),
        (config.unfreeze_blocks >= 0, "unfreeze_blocks", "≥ 0 (0 = the backbone stays frozen)"),
        (config.finetune_learning_rate > 0, "finetune_learning_rate", "> 0"),
        (0 <= config.head_epochs <= config.epochs, "head_epochs", f"in 0..epochs={config.epochs} (0 = half)"),
    ]  # fmt: skip


def threshold_rule(text: str) -> tuple[str, float | None]:
    """`threshold` → (method, target) for `evaluation.choose_threshold`: "sensitivity:0.9" → ("sensitivity", 0.9)."""
    method, _, target = text.partition(":")
    return method, (float(target) if target else None)


def _threshold_ok(text: str) -> bool:
    try:
        method, target = threshold_rule(text)
    except ValueError:
        return False
    if method == "sensitivity":
        return target is not None and 0 < target <= 1
    return method in ("fixed", "youden") and target is None


def build_model(
    config: TrainConfig, *, dtype_policy: str, pixel_stats: tuple[float, float] | None = None
) -> keras.Model:
    """One Functional builder for every variant; input (S, S, 1) float in [0, 1].

    `dtype_policy` is the resolved Keras policy (`precision.choose_precision(config.precision)`,
    which the caller resolves once); it is passed to each layer rather than set globally, so building a model never changes other models' policy. The output
    layer stays float32 so the sigmoid and the loss are computed in full precision.
    With `config.standardize`, a Normalization layer holding `pixel_stats` = (mean, std) of the
    training split's [0, 1] pixels comes first; it has no weights (the parameter counts stay the
    published ones) and is saved with the model, so a loaded model standardises by itself.
    """
    if dtype_policy not in PRECISIONS or dtype_policy == "auto":
        raise ConfigError(f"dtype_policy must be a resolved policy (float32, mixed_*), got {dtype_policy!r}.")
    if config.backbone:
        from mammo.model.backbones import build_backbone_model

        return build_backbone_model(config, dtype_policy=dtype_policy)[0]
    regularizer = keras.regularizers.L2(config.l2) if config.l2 > 0 else None
    inputs = keras.Input(shape=(config.image_size, config.image_size, 1), name="patch")  # (batch, S, S, 1)
    x = inputs
    if config.standardize:
        if pixel_stats is None or not pixel_stats[1] > 0:
            raise ConfigError(
                f"standardize=true needs the training split's pixel mean and a positive std, got {pixel_stats}; "
                "pass pixel_stats=pipeline.pixel_stats(...) or set standardize=false."
            )
        mean, std = (float(value) for value in pixel_stats)
        x = keras.layers.Normalization(axis=None, mean=mean, variance=std**2, name="standardize")(x)
    for block, count in enumerate(config.filters, start=1):
        x = keras.layers.Conv2D(
            count, 3, activation="relu", kernel_regularizer=regularizer, dtype=dtype_policy, name=f"conv{block}"
        )(x)
        x = keras.layers.MaxPooling2D(2, dtype=dtype_policy, name=f"pool{block}")(x)
    x = keras.layers.Flatten(dtype=dtype_policy, name="flatten")(x)
    if config.dense_units > 0:
        x = keras.layers.Dense(config.dense_units, activation="relu", dtype=dtype_policy, name="dense")(x)
    if config.dropout > 0:
        x = keras.layers.Dropout(config.dropout, dtype=dtype_policy, name="dropout")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="p_calcification")(x)  # (batch, 1)
    return keras.Model(inputs, outputs, name=config.variant)


def make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """Keras 3 has no `decay=`: the old per-step decay is InverseTimeDecay(lr, decay_steps=1, rate)."""
    rate: float | keras.optimizers.schedules.LearningRateSchedule = config.learning_rate
    if config.lr_decay > 0:
        rate = keras.optimizers.schedules.InverseTimeDecay(
            config.learning_rate, decay_steps=1, decay_rate=config.lr_decay
        )
    if config.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=rate)
    return keras.optimizers.Adam(learning_rate=rate)


def regularization_penalty(model: keras.Model) -> float:
    """The model's weight-decay term (the L2 sum Keras adds to every batch's loss), 0 without regularisers.

    Keras' `val_loss` is cross-entropy + this term; a test loss computed from predictions adds it
    too, so `test_loss` and `val_loss` mean the same thing.
    """
    return float(sum(float(keras.ops.convert_to_numpy(term)) for term in model.losses))
