"""`train` and `train_all` end to end on tiny prepared datasets, against a real SQLite tracking store.

Every param, metric and artifact name in tracking.py must appear, and the logged model must load
with mlflow.pyfunc and score raw uint16 patches exactly as the run's predictions.csv says.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from entrypoints import train, train_all
from mammo import tracking
from mammo.core.errors import ConfigError
from mammo.core.pixels import scale_patches
from mammo.data.store import PreparedDataset
from mammo.model.variants import VARIANTS
from mammo.serve import serving
from mammo.serve.model_input import patch_table
from tests.conftest import artifact_paths
from tests.test_pipeline import make_speck_dataset

ARTIFACTS = {
    tracking.PLOT_CURVES, tracking.PLOT_CONFUSION, tracking.PLOT_ROC, tracking.PLOT_CALIBRATION, tracking.PLOT_WORST,
    tracking.PLOT_SAMPLES, tracking.PREDICTIONS_FILE, tracking.SUMMARY_FILE, tracking.PLOT_GRADCAM_WORST,
    tracking.PLOT_GRADCAM_CORRECT, tracking.SUBGROUPS_FILE, tracking.PLOT_SUBGROUPS,
}  # fmt: skip


@pytest.fixture(scope="module")
def dataset40(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    """Prepared at 40×40 and trained at 32×32, so the pipeline's and the served model's resize are exercised."""
    return make_speck_dataset(tmp_path_factory.mktemp("d40") / "prepared", size=40, train_patients=16, test_patients=5)


def only_run(**filters: str) -> mlflow.entities.Run:
    query = " and ".join(f"tags.`{key}` = '{value}'" for key, value in filters.items())
    runs = mlflow.search_runs(experiment_names=[tracking.EXPERIMENT], filter_string=query, output_format="list")
    assert len(runs) == 1, [run.info.run_name for run in runs]
    return runs[0]


@pytest.mark.slow
def test_train_logs_every_name_and_a_servable_model(dataset40: PreparedDataset, tmp_path: Path) -> None:
    argv = ["--data", str(dataset40.path), "--filters", "8-16", "--dense-units", "8", "--epochs", "2",
            "--image-size", "32", "--batch-size", "8", "--augment", "0.5", "--seed", "5", "--precision", "float32"]  # fmt: skip
    assert train.main(argv) == 0
    run = only_run(**{"mammo.entry": "train"})
    client, run_id = MlflowClient(), run.info.run_id

    params = run.data.params
    assert set(tracking.PARAM_NAMES) | {"schedule", "precision", "optimizer"} <= set(params)
    assert (params["filters"], params["seed"], params["image_size"], params["epochs"]) == ("8-16", "5", "32", "2")
    assert (params["data_source"], params["data_digest"]) == ("specks", dataset40.digest)
    assert params["variant"] == "model5" and params["l2"] == "5e-05"  # untouched values keep the variant's
    assert params["data_patients_in_both_splits"] == str(dataset40.patients_in_both_splits)  # leakage the data carries
    assert run.data.tags[tracking.DATASET_TAG] == f"specks-{dataset40.digest}"  # the runs table's Group by column
    pixels = np.asarray(dataset40.patches[dataset40.split_indices("train")], dtype=np.float64) / 65535
    assert params["standardize"] == "True"  # the quick schedule's default; the stats are the train split's
    assert pixels.min() < float(params["standardize_mean"]) < pixels.max() and float(params["standardize_std"]) > 0

    metrics = run.data.metrics
    end_metrics = {name + tracking.END_SUFFIX for name in tracking.TEST_METRICS}
    assert set(tracking.FINAL_METRICS) | set(tracking.EPOCH_METRICS) | end_metrics <= set(metrics)
    history = {name: client.get_metric_history(run_id, name) for name in tracking.EPOCH_METRICS}
    assert all([m.step for m in points] == [1, 2] for points in history.values())  # exactly one point per epoch
    best = int(metrics["best_epoch"])
    for name in ("val_loss", "val_accuracy", "val_auc"):  # what promote ranks on is the kept epoch's value
        assert metrics[tracking.kept_metric(name)] == {m.step: m.value for m in history[name]}[best]
    assert best == 1 + int(np.argmin([m.value for m in history["val_loss"]]))
    assert 0 < metrics["decision_threshold"] < 1 and metrics["fit_seconds"] > 0
    assert metrics["test_accuracy_ci_low"] <= metrics["test_accuracy"] <= metrics["test_accuracy_ci_high"]

    assert artifact_paths(run_id) >= ARTIFACTS
    assert run.inputs.dataset_inputs[0].dataset.digest == dataset40.digest

    predictions = pd.read_csv(
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=tracking.PREDICTIONS_FILE)
    )
    test_rows = dataset40.split_indices("test")
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/{tracking.MODEL_ARTIFACT}")
    assert model.metadata.get_output_schema().input_names() == [serving.OUTPUT_COLUMN, serving.LABEL_COLUMN]
    assert model.metadata.get_input_schema().input_names() == ["dicom", "patch", "shape", "pixels"]
    raw = np.asarray(dataset40.patches[test_rows])  # (n, 40, 40) uint16, as prepared
    served = model.predict(patch_table(raw))
    assert list(served.columns) == [serving.OUTPUT_COLUMN, serving.LABEL_COLUMN] and len(served) == len(test_rows)
    by_index = predictions.set_index("index").loc[test_rows]
    np.testing.assert_allclose(served[serving.OUTPUT_COLUMN], by_index["probability"], atol=1e-5)
    threshold = serving.threshold(model)
    assert threshold == metrics["decision_threshold"]
    assert (served[serving.LABEL_COLUMN] == (served[serving.OUTPUT_COLUMN] > threshold)).all()
    keras_model = serving.load_keras(f"runs:/{run_id}/{tracking.MODEL_ARTIFACT}")
    assert keras_model.input_shape == (None, 32, 32, 1)
    # test_loss means what Keras' val_loss means: cross-entropy + the L2 term (model5 has L2 on every conv)
    keras_model.compile(loss="binary_crossentropy")
    keras_loss = keras_model.evaluate(scale_patches(raw, image_size=32), dataset40.labels[test_rows], verbose=0)
    assert metrics["test_loss"] == pytest.approx(keras_loss, rel=1e-4)


def test_train_refuses_bad_parameters_and_missing_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train.main(["--data", str(tmp_path), "--dropout", "2"]) == 2
    assert "parameter dropout=2.0 is invalid" in capsys.readouterr().err
    assert train.main(["--data", str(tmp_path / "nowhere")]) == 2
    assert "is not a complete prepared dataset" in capsys.readouterr().err


@pytest.mark.slow
def test_train_all_trains_six_children_under_one_parent_and_compares_them(tmp_path: Path) -> None:
    dataset = make_speck_dataset(tmp_path / "d48", size=48, train_patients=8, test_patients=3)
    argv = ["--data", str(dataset.path), "--epochs", "1", "--batch-size", "8", "--precision", "float32"]
    assert train_all.main(argv) == 0
    parent = only_run(**{"mammo.entry": "train_all"})
    children = mlflow.search_runs(
        experiment_names=[tracking.EXPERIMENT], output_format="list",
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )  # fmt: skip
    assert sorted(child.data.params["variant"] for child in children) == sorted(VARIANTS)
    assert all(child.data.params["epochs"] == "1" and "test_accuracy" in child.data.metrics for child in children)
    files = artifact_paths(parent.info.run_id)
    assert {tracking.COMPARISON_FILE, tracking.COMPARISON_MARKDOWN, tracking.PLOT_COMPARISON} <= files
    table = pd.read_csv(
        mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, artifact_path=tracking.COMPARISON_FILE)
    )
    assert sorted(table["variant"]) == sorted(VARIANTS)
    assert {"test_accuracy", "ci_low", "ci_high", "test_auc", "test_wrong", "test_worst"} <= set(table.columns)
    assert table.loc[table["variant"] == "model5", "mcnemar_p_vs_model5"].item() == pytest.approx(1.0)
    assert parent.data.params["data_digest"] == dataset.digest


def test_seeds_are_a_count_or_a_list() -> None:
    assert train_all.parse_seeds("3") == [0, 1, 2] and train_all.parse_seeds("2", first=5) == [5, 6]
    assert train_all.parse_seeds("0,4") == [0, 4] and train_all.parse_seeds(None) == [0]
    with pytest.raises(ConfigError, match=r"--seeds 'x'"):
        train_all.parse_seeds("x")
    with pytest.raises(ConfigError, match=r"no repeats"):
        train_all.parse_seeds("1,1")
    with pytest.raises(ConfigError, match=r"--variants: unknown \['model9'\]"):
        train_all.parse_variants("model5,model9")


def _children(parent_run_id: str) -> list[mlflow.entities.Run]:
    return mlflow.search_runs(
        experiment_names=[tracking.EXPERIMENT], output_format="list",
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
    )  # fmt: skip


def _out_of_memory_for(monkeypatch: pytest.MonkeyPatch, variants: set[str]) -> None:
    """Building these variants raises TensorFlow's own out-of-memory error; the others build as usual."""
    import tensorflow as tf

    from mammo.train import training

    real_build = training.build_model

    def build(config, **kwargs):
        if config.variant in variants:
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[128,46,46,32]")
        return real_build(config, **kwargs)

    monkeypatch.setattr(training, "build_model", build)


@pytest.mark.slow
def test_train_all_goes_on_past_a_failing_variant_and_lists_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = make_speck_dataset(tmp_path / "d48", size=48, train_patients=8, test_patients=3)
    _out_of_memory_for(monkeypatch, {"model3"})
    argv = ["--data", str(dataset.path), "--epochs", "1", "--batch-size", "8", "--precision", "float32"]
    assert train_all.main(argv) == 0
    parent = only_run(**{"mammo.entry": "train_all"})
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["children_finished"] == 5 and parent.data.metrics["children_failed"] == 1
    children = {child.data.params["variant"]: child for child in _children(parent.info.run_id)}
    assert {variant: child.info.status for variant, child in children.items()} == {
        variant: "FAILED" if variant == "model3" else "FINISHED" for variant in VARIANTS
    }
    failed = children["model3"]
    assert failed.data.tags["mammo.error"].startswith("ResourceExhaustedError: OOM when allocating")
    assert "errors/traceback.txt" in artifact_paths(failed.info.run_id)
    table = pd.read_csv(
        mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, artifact_path=tracking.COMPARISON_FILE)
    ).set_index("variant")
    assert sorted(table.index) == sorted(VARIANTS)
    assert table.loc["model3", "failed"] == 1 and table.loc["model3", "seeds"] == 0
    assert np.isnan(table.loc["model3", "test_accuracy"]) and failed.info.run_id in table.loc["model3", "error"]
    assert (table.drop(index="model3")["failed"] == 0).all() and table.drop(index="model3")[
        "test_accuracy"
    ].notna().all()
    markdown = Path(
        mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, artifact_path=tracking.COMPARISON_MARKDOWN)
    ).read_text()
    assert "**model3**: 1 run(s) FAILED" in markdown and "ResourceExhaustedError" in markdown


@pytest.mark.slow
def test_train_all_whose_every_variant_fails_ends_its_parent_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = make_speck_dataset(tmp_path / "d48", size=48, train_patients=8, test_patients=3)
    _out_of_memory_for(monkeypatch, {"model0", "model1"})
    argv = ["--data", str(dataset.path), "--variants", "model0,model1", "--epochs", "1", "--precision", "float32"]
    assert train_all.main(argv) == 2
    err = capsys.readouterr().err
    assert "model0 seed 0 FAILED" in err and "all 2 runs of the series failed" in err
    parent = only_run(**{"mammo.entry": "train_all"})
    assert parent.info.status == "FAILED" and "all 2 runs" in parent.data.tags["mammo.error"]
    assert {child.info.status for child in _children(parent.info.run_id)} == {"FAILED"}
    assert {tracking.COMPARISON_FILE, tracking.COMPARISON_MARKDOWN} <= artifact_paths(parent.info.run_id)
