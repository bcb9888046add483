"""Cross-validated comparison: the corrected paired t-test, the CV table, and `train_all --folds` end to end."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from entrypoints import train_all
from mammo import tracking
from mammo.data.splits import split_validation
from mammo.train import crossval
from tests.conftest import artifact_paths
from tests.test_pipeline import make_speck_dataset
from tests.test_splits import _rows
from tests.test_train_entry import only_run


def test_the_corrected_t_test_is_wider_than_the_plain_paired_one() -> None:
    differences = np.array([0.02, 0.03, 0.01, 0.04, 0.02])
    plain = stats.ttest_1samp(differences, 0.0).pvalue
    corrected = crossval.corrected_paired_t(differences, val_to_train=0.25)
    t_by_hand = differences.mean() / np.sqrt(differences.var(ddof=1) * (1 / 5 + 0.25))
    assert corrected == pytest.approx(2 * stats.t.sf(t_by_hand, df=4))
    assert plain < corrected < 1  # overlapping training sets: less certainty than a plain test claims
    assert crossval.corrected_paired_t(np.zeros(5), val_to_train=0.25) == 1.0
    assert np.isnan(crossval.corrected_paired_t(np.array([0.1]), val_to_train=0.25))


def test_cv_table_and_pairwise_matrix() -> None:
    folds = pd.DataFrame({
        "variant": ["model5"] * 3 + ["model3"] * 3, "fold": ["0", "1", "2"] * 2,
        "kept_val_auc": [0.90, 0.92, 0.91, 0.80, 0.83, 0.79], "kept_val_accuracy": [0.8, 0.82, 0.81, 0.7, 0.74, 0.7],
    })  # fmt: skip
    table = crossval.cv_table(folds, val_to_train=0.5).set_index("variant")
    assert table.loc["model3", "kept_val_auc_mean"] == pytest.approx(0.80667, abs=1e-4)
    assert table.loc["model3", "kept_val_auc_sd"] == pytest.approx(np.std([0.80, 0.83, 0.79], ddof=1))
    assert table.loc["model5", "p_vs_model5"] == 1.0 and table.loc["model3", "p_vs_model5"] < 0.05
    matrix = crossval.pairwise_p(folds, val_to_train=0.5)
    assert matrix.loc["model3", "model5"] == matrix.loc["model5", "model3"] == table.loc["model3", "p_vs_model5"]
    assert np.diag(matrix.to_numpy()).tolist() == [1.0, 1.0]


def test_folds_partition_the_train_split_by_patient() -> None:
    rows = _rows(patients=40)
    validations = [split_validation(rows, fold=k, folds=4, seed=1)[1] for k in range(4)]
    assert sorted(np.concatenate(validations).tolist()) == list(range(len(rows)))  # every row validated once
    for train, validation in (split_validation(rows, fold=k, folds=4, seed=1) for k in range(4)):
        assert set(rows.patient_id.iloc[train]).isdisjoint(rows.patient_id.iloc[validation])


@pytest.mark.slow
def test_train_all_with_folds_logs_mean_sd_and_a_paired_test(tmp_path: Path) -> None:
    dataset = make_speck_dataset(tmp_path / "d32", size=32, train_patients=12, test_patients=3)
    argv = ["--data", str(dataset.path), "--variants", "model1,model5", "--folds", "2", "--epochs", "1",
            "--batch-size", "8", "--precision", "float32", "--filters", "4-8", "--dense-units", "4"]  # fmt: skip
    assert train_all.main(argv) == 0
    parent = only_run(**{"mammo.entry": "train_all"})
    children = mlflow.search_runs(
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'", output_format="list"
    )
    assert sorted((c.data.params["variant"], c.data.params["fold"]) for c in children) == sorted(
        (variant, str(fold)) for variant in ("model1", "model5") for fold in range(2)
    )
    assert {tracking.CV_FILE, tracking.CV_MARKDOWN, tracking.CV_PAIRWISE_FILE} <= artifact_paths(parent.info.run_id)
    table = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, artifact_path=tracking.CV_FILE))
    table = table.set_index("variant")
    model1 = [c.data.metrics["kept_val_auc"] for c in children if c.data.params["variant"] == "model1"]
    assert table.loc["model1", "folds"] == 2 and table.loc["model1", "kept_val_auc_mean"] == pytest.approx(
        np.mean(model1)
    )
    assert table.loc["model5", "p_vs_model5"] == 1.0 and 0 <= table.loc["model1", "p_vs_model5"] <= 1
