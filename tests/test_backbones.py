"""Pretrained backbones: each builds and trains, weights come from a file or fail offline in one line,
and fine-tuning trains the head first and then only the unfrozen top blocks."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from mammo.core.errors import ConfigError
from mammo.data.store import PreparedDataset
from mammo.model import backbones
from mammo.model.backbones import BACKBONES, WeightsError
from mammo.model.variants import BACKBONE_VARIANTS, VARIANTS, make_config
from tests.test_pipeline import make_speck_dataset

SIZE = 32


def backbone_config(name: str, **overrides):
    values = {"weights": "none", "image_size": SIZE, "batch_size": 8, "epochs": 2, "augment": 0, "seed": 1}
    return make_config(name, precision="float32", **(values | overrides))


def test_every_backbone_is_a_variant_with_224_px_its_own_scaling_and_no_filters() -> None:
    for name in BACKBONES:
        config = make_config(name)
        assert (
            name in BACKBONE_VARIANTS and name not in VARIANTS and config.backbone == name and config.image_size == 224
        )
        assert config.weights == "imagenet" and not config.standardize  # the quick schedule standardises model5
        params = config.params()
        assert "filters" not in params and params["backbone"] == name and params["unfreeze_blocks"] == 2
    assert "backbone" not in make_config("model5").params()  # scratch runs log what they logged before


def test_preprocessing_is_the_backbones_own_preprocess_input() -> None:
    grey = np.random.default_rng(0).random((2, SIZE, SIZE, 1)).astype(np.float32)  # [0, 1], as the pipeline gives
    for name, backbone in BACKBONES.items():
        layer = backbones.to_backbone_input(backbone, SIZE)
        expected = getattr(keras.applications, backbone.module).preprocess_input(np.repeat(grey * 255.0, 3, axis=-1))
        np.testing.assert_allclose(layer.predict(grey, verbose=0), expected, rtol=1e-5, atol=1e-4, err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BACKBONES))
def test_each_backbone_builds_and_trains_one_step_in_mixed_precision(name: str) -> None:
    config = backbone_config(name)
    model, info = backbones.build_backbone_model(config, dtype_policy="mixed_bfloat16")
    assert info.params() == {"weights_file": "none", "weights_sha256": "none"}
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored after the build
    base = backbones.backbone_layer(model)
    assert any(layer.dtype_policy.name == "mixed_bfloat16" for layer in base.layers)
    assert model.output.dtype == "float32" and model.input_shape == (None, SIZE, SIZE, 1)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    images = np.random.default_rng(1).random((4, SIZE, SIZE, 1)).astype(np.float32)
    head = model.get_layer("p_calcification")
    before = [np.array(w) for w in head.get_weights()]
    loss = model.train_on_batch(images, np.array([0, 1, 0, 1], dtype=np.float32))
    assert np.isfinite(loss)
    assert not np.array_equal(before[0], head.get_weights()[0])  # the head learnt
    assert backbones.count_blocks(model, BACKBONES[name]) >= 6


@pytest.mark.slow
def test_local_weights_round_trip_with_their_hash(tmp_path: Path) -> None:
    backbone = BACKBONES["mobilenetv3small"]
    keras.utils.set_random_seed(1)
    original, _ = backbones.make_backbone(backbone, image_size=SIZE, weights="none")
    path = tmp_path / "mobilenet.weights.h5"
    original.save_weights(path)
    keras.utils.set_random_seed(2)  # a different random start, overwritten by the file
    loaded, info = backbones.make_backbone(backbone, image_size=SIZE, weights=str(path))
    images = np.random.default_rng(3).random((3, SIZE, SIZE, 3)).astype(np.float32) * 255
    np.testing.assert_array_equal(original.predict(images, verbose=0), loaded.predict(images, verbose=0))
    assert info.source == str(path) and info.file == str(path) and info.sha256 == backbones.file_sha256(path)
    assert len(info.sha256) == 64
    keras.utils.set_random_seed(2)
    fresh, _ = backbones.make_backbone(backbone, image_size=SIZE, weights="none")
    assert not np.allclose(original.predict(images, verbose=0), fresh.predict(images, verbose=0), rtol=1e-3, atol=0)


def test_a_missing_weights_file_is_named_before_anything_is_built() -> None:
    with pytest.raises(ConfigError, match=r"weights='/no/such\.h5': no such file; use imagenet, none"):
        make_config("vgg16", weights="/no/such.h5")


def test_imagenet_offline_fails_at_once_naming_the_file_the_cache_and_the_path_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # an empty cache: Keras must download (no network here)
    with pytest.raises(WeightsError) as raised:
        backbones.make_backbone(BACKBONES["vgg16"], image_size=SIZE, weights="imagenet")
    message = str(raised.value)
    assert "\n" not in message
    assert "could not download vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 from https://" in message
    assert f"into {tmp_path / 'keras' / 'models'} (KERAS_HOME/models" in message
    assert "weights=/path/to/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in message


def test_unfreeze_blocks_beyond_the_backbone_is_refused() -> None:
    model, _ = backbones.build_backbone_model(backbone_config("vgg16"), dtype_policy="float32")
    with pytest.raises(ConfigError, match=r"unfreeze_blocks=7 is invalid: VGG16 has 6 blocks \(stem … block5\)"):
        backbones.unfreeze_top_blocks(model, BACKBONES["vgg16"], 7)


class WeightSnapshots(keras.callbacks.Callback):
    """The backbone's weights (BatchNorm statistics included) at the start and end of each model.fit call."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: list[dict[str, np.ndarray]] = []
        self.ends: list[dict[str, np.ndarray]] = []

    def _weights(self) -> dict[str, np.ndarray]:
        base = backbones.backbone_layer(self.model)
        return {f"{layer.name}/{i}": np.array(w) for layer in base.layers for i, w in enumerate(layer.weights)}

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.starts.append(self._weights())

    def on_train_end(self, logs: dict | None = None) -> None:
        self.ends.append(self._weights())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    return make_speck_dataset(tmp_path_factory.mktemp("specks") / "prepared", train_patients=12, test_patients=4)


@pytest.mark.slow
def test_phase_1_trains_the_head_only_and_phase_2_only_the_unfrozen_blocks(dataset: PreparedDataset) -> None:
    from mammo.train.training import fit

    config = backbone_config("mobilenetv3small", epochs=3, head_epochs=1, unfreeze_blocks=2, patience=0)
    snapshots = WeightSnapshots()
    result = fit(config, dataset, callbacks=[snapshots], verbose=0)
    assert result.history["phase"] == [1.0, 2.0, 2.0] and result.epochs_run == 3  # one epoch counter
    assert result.best_epoch == int(np.argmin(result.history["val_loss"])) + 1  # kept over both phases
    phase1_start, phase2_start = snapshots.starts
    phase1_end, phase2_end = snapshots.ends
    assert all(np.array_equal(phase1_start[name], phase1_end[name]) for name in phase1_start)
    changed = {name for name in phase2_start if not np.array_equal(phase2_start[name], phase2_end[name])}
    top = {"expanded_conv_9", "expanded_conv_10"}  # MobileNetV3Small's last two blocks (conv_1 joins the last)
    blocks = dict(zip([layer.name for layer in backbones.backbone_layer(result.model).layers],
                      backbones.block_names(backbones.backbone_layer(result.model), BACKBONES["mobilenetv3small"].block_pattern),
                      strict=True))  # fmt: skip
    assert changed, "phase 2 trained nothing"
    for name in changed:
        layer_name = name.rsplit("/", 1)[0]
        assert blocks[layer_name] in top, f"{name} of block {blocks[layer_name]} changed in phase 2"
        assert "_bn" not in layer_name, f"BatchNorm {name} changed (it stays frozen)"
    assert phase2_start.keys() == phase1_end.keys()
    assert all(np.array_equal(phase1_end[name], phase2_start[name]) for name in phase1_end)


@pytest.mark.slow
def test_gradcam_finds_the_last_conv_inside_the_backbone_and_matches_the_same_network_built_flat() -> None:
    from mammo.report import saliency

    keras.utils.set_random_seed(4)
    model, _ = backbones.build_backbone_model(backbone_config("vgg16", image_size=64), dtype_policy="float32")
    assert saliency.last_conv_layer(model).name == "block5_conv3"

    # Copies of the same layers and weights as one flat graph: Grad-CAM's top-level path applies there.
    def copy(layer: keras.layers.Layer) -> keras.layers.Layer:
        return (
            keras.models.clone_model(layer)
            if isinstance(layer, keras.Model)
            else layer.__class__.from_config(layer.get_config())
        )

    originals = [model.get_layer(backbones.INPUT_LAYER), *backbones.backbone_layer(model).layers[1:]]
    originals += [model.get_layer(name) for name in ("pool", "dropout", "p_calcification")]
    inputs = keras.Input(shape=(64, 64, 1))
    x, copies = inputs, []
    for layer in originals:
        copies.append(copy(layer))
        x = copies[-1](x)
    for original, copied in zip(originals, copies, strict=True):
        copied.set_weights(original.get_weights())
    flat = keras.Model(inputs, x)
    images = np.random.default_rng(5).random((3, 64, 64, 1)).astype(np.float32)
    np.testing.assert_allclose(model.predict(images, verbose=0), flat.predict(images, verbose=0), rtol=1e-5)
    nested_maps = saliency.gradcam(model, images)
    assert nested_maps.shape == (3, 64, 64) and nested_maps.max() > 0
    np.testing.assert_allclose(nested_maps, saliency.gradcam(flat, images, layer_name="block5_conv3"), atol=1e-4)
    np.testing.assert_allclose(saliency.gradcam(model, images, layer_name="block4_conv3"),
                               saliency.gradcam(flat, images, layer_name="block4_conv3"), atol=1e-4)  # fmt: skip


@pytest.mark.slow
def test_a_backbone_run_logs_both_phases_and_its_model_predicts_in_a_fresh_venv(
    dataset: PreparedDataset, tmp_path: Path, shared_cbis: Path
) -> None:
    import mlflow

    from mammo import tracking
    from mammo.serve import serving
    from mammo.train.training import train_run
    from tests.test_model_portable import predict_in_fresh_venv
    from tests.test_serving import DICOM

    config = backbone_config("mobilenetv3small", epochs=2, unfreeze_blocks=1, patience=0)
    run_id, result, _ = train_run(config, dataset, verbose=0)
    run = tracking.get_run(run_id)
    assert run.data.params["backbone"] == "mobilenetv3small" and run.data.params["weights"] == "none"
    assert run.data.params["weights_sha256"] == "none" and "filters" not in run.data.params
    phases = mlflow.MlflowClient().get_metric_history(run_id, "phase")
    assert [(point.step, point.value) for point in phases] == [(1, 1.0), (2, 2.0)]
    artifacts = {item.path for item in mlflow.MlflowClient().list_artifacts(run_id, "plots")}
    assert "plots/gradcam_worst.png" in artifacts  # Grad-CAM found the conv inside the backbone

    outside = tmp_path / "elsewhere"
    model_dir = Path(
        mlflow.artifacts.download_artifacts(
            f"runs:/{run_id}/{tracking.MODEL_ARTIFACT}", dst_path=str(outside / "model")
        )
    )
    patches = np.asarray(dataset.patches[dataset.split_indices("test")])
    np.save(outside / "patches.npy", patches)
    dicom = outside / "crop.dcm"
    dicom.write_bytes((shared_cbis / DICOM).read_bytes())
    fresh = predict_in_fresh_venv(model_dir, patches=outside / "patches.npy", dicom=dicom, folder=outside)
    assert Path(fresh["code"]).is_relative_to(model_dir)
    here = serving.predict_batches(serving.load(f"runs:/{run_id}/{tracking.MODEL_ARTIFACT}"), patches)
    assert fresh["patches"] == pytest.approx(here.tolist(), abs=1e-6)
    assert fresh["patches"] == pytest.approx(result.probabilities.tolist(), abs=1e-5)
    assert len(fresh["dicom"]) == 1 and 0.0 <= fresh["dicom"][0] <= 1.0


def test_the_study_space_offers_backbones_only_on_request_and_model5_stays_trial_0() -> None:
    import optuna

    from mammo.search import space, study

    plain = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    assert "backbone" not in space.suggest_params(plain.ask(), image_size=64)  # the default space is unchanged
    drawn = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    points = [
        space.suggest_params(drawn.ask(), image_size=64, backbones=("vgg16", "mobilenetv3small")) for _ in range(30)
    ]
    kinds = {point["backbone"] for point in points}
    assert kinds == {"scratch", "vgg16", "mobilenetv3small"}
    base = make_config("model5", epochs=2, image_size=64, weights="none")
    for point in points:
        config = study.trial_config(base, point, reference=False)
        if point["backbone"] == "scratch":
            assert not config.backbone and "unfreeze_blocks" not in point and len(config.filters) == point["blocks"]
        else:
            assert config.backbone == point["backbone"] and config.weights == "none" and config.image_size == 64
            assert config.unfreeze_blocks == point["unfreeze_blocks"] and "filters" not in point
            assert config.finetune_learning_rate == point["finetune_learning_rate"] and not config.standardize
    reference = study.reference_params(base, backbones=("vgg16",))
    assert (
        reference["backbone"] == "scratch" and study.trial_config(base, reference, reference=True).variant == "model5"
    )
    assert "backbone" not in study.reference_params(base)
    with pytest.raises(ConfigError, match=r"--backbones: unknown \['resnet'\]"):
        study.settings_from_options({"backbones": "resnet", "n_trials": 1}).check()


def test_comparison_md_shows_the_published_transfer_anchors_beside_a_series_with_backbones() -> None:
    import pandas as pd

    from mammo.report import reports
    from mammo.train.series import parse_variants

    assert parse_variants("model5,efficientnetb0,vgg16") == ["model5", "efficientnetb0", "vgg16"]
    assert parse_variants(None) == list(VARIANTS)  # the default series stays Model 0–5
    table = pd.DataFrame({"variant": ["model5", "vgg16"], "test_accuracy": [0.84, 0.9], "test_patches": [336, 336]})
    text = reports.comparison_markdown(table, data_source="cbis-ddsm")
    assert "## Published transfer-learning anchors" in text
    assert "| 91.37 % | leoll2/MedicalCNN | the published project's own 336-patch test set" in text
    assert "92.53 % | arXiv:1803.01906" in text and "92.33 %" in text and "not grouped by patient" in text
    scratch = reports.comparison_markdown(table.iloc[:1], data_source="cbis-ddsm")
    assert "transfer-learning anchors" not in scratch
