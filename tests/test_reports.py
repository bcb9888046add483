"""Reports logged to a real MLflow run on the per-test SQLite store (conftest's autouse fixture)."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from mammo import tracking
from mammo.data.store import MANIFEST_COLUMNS, PreparedDataset, write_prepared
from mammo.report import evaluation, reports
from tests.conftest import artifact_paths

SPLITS = ["train"] * 6 + ["test"] * 6
LABELS = [0, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 1]


@pytest.fixture
def dataset(tmp_path: Path) -> PreparedDataset:
    """12 patches of 8×8; patch i is filled with the value i so a figure's pixels name its row."""
    count = len(LABELS)
    patches = np.stack([np.full((8, 8), 1000 * position, dtype=np.uint16) for position in range(count)])
    manifest = pd.DataFrame({column: [""] * count for column in MANIFEST_COLUMNS})
    manifest["index"] = range(count)
    manifest["patient_id"] = [f"P_{position // 2:05d}" for position in range(count)]
    manifest["label"] = LABELS
    manifest["abnormality_type"] = ["mass" if label == 0 else "calcification" for label in LABELS]
    manifest["split"] = SPLITS
    return write_prepared(tmp_path / "prepared", patches=patches, manifest=manifest, source="test", options={})


@pytest.mark.slow
def test_a_training_run_logs_every_metric_plot_and_the_predictions(dataset: PreparedDataset) -> None:
    """What training does in one run: curves and samples, the best-checkpoint report, the `_end` one."""
    test_rows = dataset.split_indices("test")[::-1]  # any order: the predictions file is sorted by index
    probabilities = np.array([[0.2], [0.9], [0.6], [0.3], [0.95], [0.1]])  # Keras's (N, 1)
    history = {"loss": [0.7, 0.5], "val_loss": [0.6, 0.65], "accuracy": [0.5, 0.7], "val_accuracy": [0.6, 0.55]}
    with tracking.start_run(run_name="report") as run:
        reports.log_training_plots(
            history=history, best_epoch=1, dataset=dataset, train_indices=dataset.split_indices("train")
        )
        returned = reports.log_test_report(probabilities=probabilities, dataset=dataset, indices=test_rows)
        reports.log_test_report(
            probabilities=np.full(6, 0.4), dataset=dataset, indices=test_rows, suffix=tracking.END_SUFFIX, loss=0.123
        )
        train_rows = dataset.split_indices("train")
        reports.log_test_report(
            probabilities=np.full(6, 0.7), dataset=dataset, indices=train_rows, prefix="train_", plots=False
        )
    logged = MlflowClient().get_run(run.info.run_id).data.metrics
    labels = dataset.labels[test_rows]
    expected = evaluation.classification_metrics(labels, probabilities.ravel())
    for name in tracking.TEST_METRICS:
        assert returned[name] == pytest.approx(expected[name], nan_ok=True)
        assert logged[name] == pytest.approx(expected[name], nan_ok=True)
        assert f"{name}_end" in logged
    assert logged["test_accuracy_end"] == pytest.approx(labels.tolist().count(0) / 6)
    assert logged["test_loss_end"] == pytest.approx(0.123)  # the given Keras loss replaces log loss
    assert logged["train_accuracy"] == pytest.approx(dataset.labels[train_rows].mean())
    report_files = {
        tracking.PLOT_CONFUSION, tracking.PLOT_ROC, tracking.PLOT_CALIBRATION, tracking.PLOT_WORST,
        tracking.PREDICTIONS_FILE, tracking.SUBGROUPS_FILE, tracking.PLOT_SUBGROUPS,
    }  # fmt: skip
    end_files = {reports.artifact_name(name, suffix=tracking.END_SUFFIX) for name in report_files}
    assert "plots/worst_end.png" in end_files
    # plots=False logged no `train_` files
    assert artifact_paths(run.info.run_id) == {tracking.PLOT_CURVES, tracking.PLOT_SAMPLES} | report_files | end_files
    table = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="predictions.csv"))
    assert table["index"].tolist() == sorted(test_rows)
    assert table["probability"].tolist() == pytest.approx(probabilities.ravel()[::-1])
    assert table["worst"].sum() == logged["test_worst"]
    groups = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="subgroups.csv"))
    assert groups.groupby("attribute")["n"].sum().tolist() == [6, 6, 6, 6]  # every attribute covers the test rows
    assert groups.loc[groups["attribute"] == "view", "group"].tolist() == ["missing"]  # the fixture has no views


# Test rows 6–11 (patients P_00003–P_00005): labels 0 0 1 1 0 1
SALIENCY_PROBABILITIES = [0.95, 0.6, 0.9, 0.1, 0.2, 0.8]  # worst: rows 6, 9; wrong only: row 7; correct: 8, 10, 11


def _tiny_conv_model(side: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((side, side, 1))
    x = keras.layers.Conv2D(2, 3, activation="relu", name="only_conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))


def test_saliency_figures_show_the_worst_panel_patches_and_correct_ones_scaled_as_in_training(
    dataset: PreparedDataset,
) -> None:
    test_rows = dataset.split_indices("test")
    figures = reports.saliency_figures(
        model=_tiny_conv_model(12), dataset=dataset, indices=test_rows, probabilities=SALIENCY_PROBABILITIES,
        image_size=12,
    )  # fmt: skip
    assert set(figures) == {tracking.PLOT_GRADCAM_WORST, tracking.PLOT_GRADCAM_CORRECT}
    worst = [axes for axes in figures[tracking.PLOT_GRADCAM_WORST].axes if axes.get_images()]
    assert [axes.get_title() for axes in worst] == [
        "mass · P_00003\np=0.95", "calcification · P_00004\np=0.10", "mass · P_00003\np=0.60\nwrong, not worst",
    ]  # fmt: skip
    for axes, row in zip(worst, [6, 9, 7], strict=True):  # patch i is filled with 1000·i, resized 8 → 12
        patch, heatmap = (layer.get_array() for layer in axes.get_images())
        assert patch.shape == heatmap.shape == (12, 12)
        np.testing.assert_allclose(patch, 1000 * row / 65535, rtol=1e-5)
    title = " ".join(figures[tracking.PLOT_GRADCAM_WORST].get_suptitle().split())  # unwrapped
    assert "layer only_conv" in title and "2 worst (|label − p| > 0.8) + 1 wrong, not worst" in title
    correct = [axes for axes in figures[tracking.PLOT_GRADCAM_CORRECT].axes if axes.get_images()]
    shown_rows = sorted(round(float(axes.get_images()[0].get_array()[0, 0]) * 65535 / 1000) for axes in correct)
    assert shown_rows == [8, 10, 11]  # every correct patch (fewer than 4 per class), none of the wrong ones


def test_log_saliency_logs_both_figures_under_the_report_names(dataset: PreparedDataset) -> None:
    with tracking.start_run(run_name="saliency") as run:
        reports.log_saliency(
            model=_tiny_conv_model(8), dataset=dataset, indices=dataset.split_indices("test"),
            probabilities=SALIENCY_PROBABILITIES, suffix=tracking.END_SUFFIX,
        )  # fmt: skip
    assert artifact_paths(run.info.run_id) == {"plots/gradcam_worst_end.png", "plots/gradcam_correct_end.png"}


def test_artifact_names_follow_prefix_and_suffix() -> None:
    assert reports.artifact_name(tracking.PLOT_ROC, prefix="val_") == "plots/val_roc.png"
    assert reports.artifact_name(tracking.PREDICTIONS_FILE, suffix="_end") == "predictions_end.csv"
    assert reports.artifact_name(tracking.PLOT_ROC) == tracking.PLOT_ROC


def test_report_rejects_mismatched_rows(dataset: PreparedDataset) -> None:
    with pytest.raises(ValueError, match="indices has 6 rows but probabilities has 2"):
        reports.log_test_report(probabilities=[0.1, 0.2], dataset=dataset, indices=dataset.split_indices("test"))
    with pytest.raises(ValueError, match=r"row positions within 0\.\.11"):
        reports.log_test_report(probabilities=[0.1], dataset=dataset, indices=[12])


def _results() -> list[dict]:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    model5 = [np.array([0.1, 0.2, 0.3, 0.6, 0.9, 0.8, 0.7, 0.6, 0.9, 0.4]), np.full(10, 0.9) * labels + 0.05]
    model0 = [np.array([0.9, 0.8, 0.7, 0.6, 0.1, 0.2, 0.9, 0.8, 0.9, 0.4]), np.full(10, 0.3)]
    return [
        {"variant": variant, "seed": seed, "run_id": f"{variant}-{seed}", "labels": labels, "probabilities": p}
        for variant, runs in (("model0", model0), ("model5", model5))
        for seed, p in enumerate(runs)
    ]


def test_comparison_table_means_intervals_and_paired_mcnemar() -> None:
    results = _results()
    results[0]["metrics"] = {"test_auc": 0.99}  # a logged metric wins over the recomputed one
    table = reports.comparison_table(results)
    assert table["variant"].tolist() == ["model0", "model5"]
    assert table["seeds"].tolist() == [2, 2]
    model0, model5 = table.iloc[0], table.iloc[1]
    assert model0["test_accuracy"] == pytest.approx((0.3 + 0.4) / 2)
    assert model5["test_accuracy"] == pytest.approx((0.8 + 1.0) / 2)
    assert model5["test_accuracy_sd"] == pytest.approx(np.std([0.8, 1.0], ddof=1))
    assert (model0["ci_low"], model0["ci_high"]) == pytest.approx(evaluation.wilson_interval(0.35, 10))
    labels = results[0]["labels"]
    p_seed0 = evaluation.mcnemar_test(labels, results[0]["probabilities"], results[2]["probabilities"])[0]
    p_seed1 = evaluation.mcnemar_test(labels, results[1]["probabilities"], results[3]["probabilities"])[0]
    assert model0["mcnemar_p_vs_model5"] == pytest.approx(np.median([p_seed0, p_seed1]))
    assert model5["mcnemar_p_vs_model5"] == 1.0
    assert model0["test_auc"] == pytest.approx((0.99 + 0.5) / 2)
    assert model5["test_wrong"] == pytest.approx((2 + 0) / 2)


def test_comparison_table_carries_the_published_figures_where_they_exist() -> None:
    results = _results()
    results[0]["variant"] = "trial3"  # a study trial: nothing published
    table = reports.comparison_table(results).set_index("variant")
    assert table.loc["model5", ["published_test_accuracy", "published_test_wrong", "published_test_worst"]].tolist() == [
        pytest.approx(0.8423), 53, 12
    ]  # fmt: skip
    assert table.loc["trial3", ["published_test_accuracy", "published_test_wrong"]].isna().all()
    assert table["test_patches"].tolist() == [10, 10, 10]
    # Each published figure beside ours under the published definition (at 0.5), not the model's own rule.
    assert list(table.columns).index("published_test_wrong") == list(table.columns).index("test_wrong_at_0_5") + 1


@pytest.mark.parametrize(
    ("source", "says"),
    [("synthetic", "NOT comparable"), ("cbis-ddsm", "not the same ones"), ("tensors", "same test patches"),
     (None, "not recorded")],
)  # fmt: skip
def test_comparison_markdown_says_what_the_data_allows(source: str | None, says: str) -> None:
    text = reports.comparison_markdown(reports.comparison_table(_results()), data_source=source)
    assert text.startswith("**Note:**") and says in text.splitlines()[0]


def test_comparison_needs_the_same_test_patches_and_complete_results() -> None:
    results = _results()
    results[2]["labels"] = results[2]["labels"][::-1]
    with pytest.raises(ValueError, match="different test patches"):
        reports.comparison_table(results)
    with pytest.raises(ValueError, match=r"results\[0\] lacks \['probabilities'\]"):
        reports.comparison_table([{"variant": "model0", "labels": [0]}])
    only_model0 = reports.comparison_table(_results()[:2])
    assert math.isnan(only_model0["mcnemar_p_vs_model5"][0])


def test_log_comparison_logs_table_markdown_plot_and_p_values() -> None:
    table = reports.comparison_table(_results())
    with tracking.start_run(run_name="all") as run:
        tracking.log_params({"data_source": "synthetic"})  # as train_all logs it on the parent run
        reports.log_comparison(table)
    run_id = run.info.run_id
    assert artifact_paths(run_id) == {tracking.COMPARISON_FILE, tracking.COMPARISON_MARKDOWN, tracking.PLOT_COMPARISON}
    metrics = MlflowClient().get_run(run_id).data.metrics
    assert metrics["mcnemar_p_model0"] == pytest.approx(table["mcnemar_p_vs_model5"][0])
    assert metrics["mcnemar_p_model5"] == 1.0
    lines = mlflow.artifacts.load_text(f"runs:/{run_id}/{tracking.COMPARISON_MARKDOWN}").splitlines()
    assert lines[0].startswith("**Note:** Our numbers come from the synthetic default dataset")
    assert "NOT comparable" in lines[0] and "10 test patches" in lines[0]
    markdown = lines[lines.index(next(line for line in lines if line.startswith("| variant"))) :]
    assert markdown[0].startswith(
        "| variant | seeds | test_accuracy | test_accuracy_sd | ci_low | ci_high | test_auc | test_wrong | test_worst "
        "| test_accuracy_at_0_5 | published_test_accuracy | test_wrong_at_0_5 | published_test_wrong"
    )
    assert markdown[1].startswith("| --- |")
    assert markdown[2].startswith("| model0 | 2 | 0.35 |")
    assert "| 0.7292 |" in markdown[2] and "| 0.8423 |" in markdown[3]  # the published test accuracies
    logged = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=tracking.COMPARISON_FILE))
    assert logged["test_accuracy"].tolist() == pytest.approx(table["test_accuracy"].tolist())


def test_comparison_table_lists_failed_runs_beside_the_finished_ones() -> None:
    failed = [{"variant": "model3", "seed": 0, "run_id": "r3", "error": "ResourceExhaustedError: OOM"},
              {"variant": "model5", "seed": 1, "run_id": "r5", "error": "ValueError: bug"}]  # fmt: skip
    table = reports.comparison_table(_results(), failed=failed).set_index("variant")
    assert table.loc["model3", "seeds"] == 0 and table.loc["model3", "failed"] == 1
    assert (
        np.isnan(table.loc["model3", "test_accuracy"])
        and "run r3: ResourceExhaustedError" in table.loc["model3", "error"]
    )
    assert table.loc["model5", "failed"] == 1 and table.loc["model5", "seeds"] > 0  # its finished seeds still count
    assert table.loc["model0", "failed"] == 0 and table.loc["model0", "error"] == ""
    text = reports.comparison_markdown(table.reset_index(), data_source="synthetic")
    assert "- **model3**: 1 run(s) FAILED (seed 0, run r3: ResourceExhaustedError: OOM)" in text
    assert "failed" not in reports.comparison_table(_results()).columns  # no failures: the table as before
