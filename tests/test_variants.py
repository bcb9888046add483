"""The variant table, the config parser and the one builder (architectures checked at the real 150×150)."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from mammo import tracking
from mammo.core.errors import ConfigError
from mammo.model.variants import SCHEDULES, VARIANTS, build_model, feature_size, make_config, make_optimizer

# Counted by hand from the layer shapes (3×3 valid conv + 2×2 pool per block, 150 → 148 → 74 → ...).
EXPECTED_PARAMETERS_150 = {
    "model0": 101_761,  # conv 32, 64 → 36×36×64 → Dense(1)
    "model1": 101_761,  # + Dropout (no weights)
    "model2": 101_761,  # + augmentation (no weights)
    "model3": 1_868_385,  # conv 32, 64, 128 → 17×17×128 → Dense(48) → Dense(1)
    "model4": 990_049,  # + conv 256 → 7×7×256: the published count
    "model5": 990_049,  # + L2 on the kernels (no weights)
}


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_has_the_expected_parameter_count_at_150(variant: str, schedule: str) -> None:
    model = build_model(
        make_config(variant, schedule=schedule, precision="float32"), dtype_policy="float32", pixel_stats=(0.5, 0.15)
    )
    assert model.count_params() == EXPECTED_PARAMETERS_150[variant]  # standardize adds no weights
    assert model.input_shape == (None, 150, 150, 1) and model.output_shape == (None, 1)


def test_standardize_puts_the_training_statistics_first_and_the_published_schedule_has_none(tmp_path) -> None:
    quick = make_config("model5", precision="float32", image_size=64, filters="4-8", dense_units=0)
    assert quick.standardize and not make_config("model5", schedule="published").standardize
    model = build_model(quick, dtype_policy="float32", pixel_stats=(0.52, 0.15))
    layer = model.layers[1]
    assert isinstance(layer, keras.layers.Normalization) and layer.name == "standardize"
    images = np.array([0.52, 0.67, 0.37], dtype=np.float32)[:, None, None, None] * np.ones((3, 64, 64, 1), np.float32)
    standardised = keras.Model(model.input, layer.output).predict(images, verbose=0)
    np.testing.assert_allclose(standardised[:, 0, 0, 0], [0.0, 1.0, -1.0], atol=1e-5)
    model.save(tmp_path / "m.keras")  # the statistics travel with the saved model
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-6)
    with pytest.raises(ConfigError, match=r"standardize=true needs the training split's pixel mean"):
        build_model(quick, dtype_policy="float32")
    with pytest.raises(ConfigError, match=r"positive std"):
        build_model(quick, dtype_policy="float32", pixel_stats=(0.5, 0.0))
    plain = build_model(
        make_config("model5", precision="float32", standardize="false", image_size=64), dtype_policy="float32"
    )
    assert not any(isinstance(layer, keras.layers.Normalization) for layer in plain.layers)


def test_model4_is_the_published_architecture_and_model5_adds_l2_on_every_conv() -> None:
    model4 = build_model(make_config("model4", schedule="published", precision="float32"), dtype_policy="float32")
    kinds = [type(layer).__name__ for layer in model4.layers]
    assert kinds == ["InputLayer"] + ["Conv2D", "MaxPooling2D"] * 4 + ["Flatten", "Dense", "Dropout", "Dense"]
    convs = [layer for layer in model4.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [32, 64, 128, 256] and {c.kernel_size for c in convs} == {(3, 3)}
    assert model4.get_layer("dense").units == 48 and model4.get_layer("dropout").rate == 0.5
    assert all(c.kernel_regularizer is None for c in convs)
    model5 = build_model(make_config("model5", schedule="published", precision="float32"), dtype_policy="float32")
    regularizers = [layer.kernel_regularizer for layer in model5.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(regularizers) == 4 and all(r is not None and r.l2 == pytest.approx(5e-5) for r in regularizers)
    assert model5.get_layer("p_calcification").activation.__name__ == "sigmoid"


def test_each_variant_makes_exactly_the_published_change_to_the_previous_one() -> None:
    """DESIGN's table, one change per model, as differences between the configs the table produces."""
    published = {name: dataclasses.asdict(make_config(name, schedule="published")) for name in VARIANTS}

    def changed(before: str, after: str) -> set[str]:
        return {key for key in published[after] if key != "variant" and published[after][key] != published[before][key]}

    assert changed("model0", "model1") == {"dropout"}
    assert changed("model1", "model2") == {"augment"}
    # + Conv2D 128, Dense(48), early stopping, batch 128, RMSprop with decay
    assert changed("model2", "model3") == {"filters", "dense_units", "patience", "batch_size", "optimizer", "lr_decay"}
    assert changed("model3", "model4") == {"filters"}
    assert changed("model4", "model5") == {"l2"}
    model3 = make_config("model3", schedule="published")
    optimizer = make_optimizer(model3)
    assert isinstance(optimizer, keras.optimizers.RMSprop)
    assert float(optimizer.learning_rate) == pytest.approx(1e-3)  # InverseTimeDecay at step 0
    assert float(optimizer._learning_rate(1000)) == pytest.approx(1e-3 / (1 + 1e-3 * 1000))  # decay=1e-3 per step


def test_rmsprop_decay_is_inverse_time_decay_per_step() -> None:
    optimizer = make_optimizer(make_config("model5"))
    assert isinstance(optimizer, keras.optimizers.RMSprop)
    schedule = optimizer._learning_rate  # the InverseTimeDecay object
    assert float(schedule(0)) == pytest.approx(1e-3)
    assert float(schedule(1000)) == pytest.approx(1e-3 / 2)  # 1e-3 / (1 + 1e-3 · 1000)
    assert isinstance(make_optimizer(make_config("model0")), keras.optimizers.Adam)


def test_overrides_parse_cli_strings() -> None:
    config = make_config(
        "model5", filters="16-32", dense_units="0", dropout="0.25", l2="1e-4", learning_rate="3e-4",
        batch_size="64", epochs="2", patience="1", augment="false", image_size="64", seed="7",
        split_by="image", val_fraction="0.25", precision="float32", lr_decay=None, standardize="no",
    )  # fmt: skip
    assert config.filters == (16, 32) and config.dense_units == 0 and config.dropout == 0.25
    assert (config.l2, config.learning_rate, config.lr_decay) == (1e-4, 3e-4, 1e-3)  # None keeps the default
    assert (config.batch_size, config.epochs, config.patience, config.augment) == (64, 2, 1, 0.0)
    assert (config.image_size, config.seed, config.split_by, config.val_fraction) == (64, 7, "image", 0.25)
    assert config.standardize is False and make_config("model0", standardize="true").standardize is True
    assert make_config("model0", augment="true").augment == 1.0
    assert make_config("model0", filters=[8, 16, 32]).filters == (8, 16, 32)
    assert make_config("model0", filters="8,16").filters == (8, 16)
    model = build_model(
        make_config("model5", filters="8-16", dense_units=0, dropout=0, image_size=32, standardize=0),
        dtype_policy="float32",
    )
    assert [type(layer).__name__ for layer in model.layers][-2:] == ["Flatten", "Dense"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dropuot": 0.2}, r"unknown parameter\(s\) \['dropuot'\]"),
        ({"dropout": "lots"}, r"parameter dropout: cannot use 'lots'"),
        ({"epochs": "1.5"}, r"parameter epochs: cannot use '1.5'"),
        ({"epochs": True}, r"parameter epochs: cannot use True"),
        ({"filters": "32-x"}, r"parameter filters: cannot use '32-x'"),
        ({"dropout": 1.0}, r"parameter dropout=1.0 is invalid: must be in \[0, 1\)"),
        ({"batch_size": 0}, r"parameter batch_size=0 is invalid"),
        ({"split_by": "lesion"}, r"parameter split_by='lesion' is invalid: must be one of \('patient', 'image'\)"),
        ({"precision": "fp8"}, r"parameter precision='fp8' is invalid"),
        ({"optimizer": "sgd"}, r"parameter optimizer='sgd' is invalid"),
        ({"image_size": 32}, r"image_size=32 is too small for 4 conv blocks .* use image_size ≥ 46"),
        ({"learning_rate": "nan"}, r"parameter learning_rate: cannot use 'nan'"),
        (
            {"standardize": "maybe"},
            r"parameter standardize: cannot use 'maybe' \(expected true or false \(true/yes/on/1 or false/no/off/0\), got 'maybe'\)",
        ),
    ],
)
def test_bad_overrides_are_rejected_naming_the_parameter(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config("model5", **overrides)


def test_unknown_variant_or_schedule_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"unknown variant 'model6'; choose one of model0, .*model5"):
        make_config("model6")
    with pytest.raises(ConfigError, match=r"unknown schedule 'slow'"):
        make_config("model5", schedule="slow")


def test_params_are_the_tracking_names_and_the_config_is_frozen() -> None:
    config = make_config("model5")
    params = config.params()
    expected = (set(tracking.PARAM_NAMES) - {"data_source", "data_digest"}) | {
        "schedule", "precision", "optimizer", "standardize", "threshold"
    }  # fmt: skip
    assert set(params) == expected
    assert params["filters"] == "32-64-128-256" and params["variant"] == "model5"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3  # type: ignore[misc]


def test_feature_size_follows_the_valid_conv_and_pool_arithmetic() -> None:
    assert feature_size(150, 4) == 7 and feature_size(150, 3) == 17 and feature_size(150, 2) == 36
    assert feature_size(46, 4) == 1 and feature_size(45, 4) == 0
