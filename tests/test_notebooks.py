"""The notebooks run top to bottom (nbclient, a real kernel) on tiny data."""

from __future__ import annotations

import importlib.util
import io
import re
from pathlib import Path

import mlflow
import nbformat
import numpy as np
import optuna
import pandas as pd
import pytest
from nbclient import NotebookClient

from mammo import tracking
from mammo.report import evaluation
from mammo.search import space
from tests.conftest import REPO_ROOT

PLOTLY_MIME = "application/vnd.plotly.v1+json"


def _execute(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> nbformat.NotebookNode:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    notebook = nbformat.read(REPO_ROOT / "notebooks" / name, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    return notebook


def _outputs(notebook: nbformat.NotebookNode) -> list[dict]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]


def _text(notebook: nbformat.NotebookNode) -> str:
    return "\n".join(
        output.get("text", "") + str(output.get("data", {}).get("text/plain", "")) for output in _outputs(notebook)
    )


def _printed_table(text: str, title: str) -> pd.DataFrame:
    """The whitespace-separated table printed on the lines after `title`, up to the next blank line."""
    block = text.split(title, 1)[1].split("\n", 1)[1].split("\n\n", 1)[0]
    return pd.read_csv(io.StringIO(block), sep=r"\s+")


@pytest.mark.slow
@pytest.mark.reference
def test_explore_notebook_compares_the_real_csvs_with_the_synthetic_default(tmp_path, monkeypatch) -> None:
    notebook = _execute("explore_data.ipynb", tmp_path, monkeypatch, MAMMO_NOTEBOOK_CASES="48")
    text = _text(notebook)
    assert list((tmp_path / "data" / "prepared").glob("synthetic*/patches.npy"))  # prepared on first use
    # The four original TCIA files, parsed (not line-counted: quoted paths hold newlines).
    for name, rows in (
        ("mass_case_description_train_set.csv", 1318), ("mass_case_description_test_set.csv", 378),
        ("calc_case_description_train_set.csv", 1546), ("calc_case_description_test_set.csv", 326),
    ):  # fmt: skip
        assert re.search(rf"{name}\s+{rows}\b", text), name
    assert "real CBIS-DDSM: 3568 rows, 1566 patients" in text
    assert "synthetic default (48 case rows" in text
    # Each distribution: real and synthetic shares side by side, each column summing to 1.
    for column in ("pathology", "breast_density", "subtlety", "view", "abnormality_type"):
        table = _printed_table(text, f"distribution of {column}")
        assert list(table.columns[-2:]) == ["real", "synthetic"], column
        assert np.allclose(table[["real", "synthetic"]].sum(), 1.0, atol=1e-3), column
    pathology = _printed_table(text, "distribution of pathology")
    assert pathology.loc["MALIGNANT", "real"] == pytest.approx(1457 / 3568, abs=1e-3)


def _log_variant_run(
    name: str, *, accuracy: float, epochs: int, labels: np.ndarray, probabilities: np.ndarray, digest: str = "d1",
    source: str = "synthetic", variant: str | None = None,
) -> None:  # fmt: skip
    with mlflow.start_run(run_name=name):
        mlflow.log_params({"variant": variant or name, "seed": 0, "data_digest": digest, "data_source": source})
        mlflow.log_metrics({"test_accuracy": accuracy, "test_accuracy_ci_low": accuracy - 0.05,
                            "test_accuracy_ci_high": accuracy + 0.04, "test_auc": 0.9, "val_auc": 0.9})  # fmt: skip
        for epoch in range(1, epochs + 1):
            mlflow.log_metrics({"loss": 1 / epoch, "val_loss": 2.0 if epoch == epochs else 1 / epoch,
                                "accuracy": 0.5 + epoch / 100, "val_accuracy": 0.5, "val_auc": 0.6}, step=epoch)  # fmt: skip
        table = pd.DataFrame({"index": np.arange(len(labels)) + 100, "patient_id": "P", "label": labels,
                              "probability": probabilities})  # fmt: skip
        tracking.log_dataframe(table, tracking.PREDICTIONS_FILE)


def _fake_study(storage: str) -> None:
    def objective(trial: optuna.Trial) -> float:
        dropout = trial.suggest_float("dropout", 0.0, 0.6)
        l2 = trial.suggest_float("l2", 1e-6, 1e-3, log=True)
        if trial.number == 3:
            raise optuna.TrialPruned()
        return 0.9 - (dropout - 0.3) ** 2 - l2

    study = optuna.create_study(
        study_name=space.DEFAULT_STUDY_NAME, storage=storage, direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )  # fmt: skip
    study.optimize(objective, n_trials=6)


@pytest.mark.slow
def test_compare_notebook_ranks_runs_and_shows_curves_mcnemar_and_the_study(tmp_path, monkeypatch) -> None:
    tracking.use_experiment()
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 40)
    right = {name: rng.random(40) < accuracy for name, accuracy in (("model0", 0.6), ("model4", 0.8), ("model5", 0.9))}
    probabilities = {name: np.where(ok, labels, 1 - labels) * 0.8 + 0.1 for name, ok in right.items()}
    # An older run on another dataset, better on its own (easier) test split: ranked apart, never first of d1.
    _log_variant_run("other-data", accuracy=0.995, epochs=2, labels=labels, probabilities=probabilities["model5"],
                     digest="d2", source="cbis-ddsm", variant="model3")  # fmt: skip
    # An older model5 run on the same data: the notebook compares the latest run of each variant.
    _log_variant_run("model5", accuracy=0.7, epochs=2, labels=labels, probabilities=1 - probabilities["model5"])
    for name, epochs in (("model0", 4), ("model4", 3), ("model5", 5)):
        _log_variant_run(
            name, accuracy=right[name].mean(), epochs=epochs, labels=labels, probabilities=probabilities[name]
        )
    with mlflow.start_run(run_name="trial-0", tags={tracking.STUDY_TAG: "s"}):  # a study trial: not a variant run
        mlflow.log_params({"variant": "model5", "seed": 0, "data_digest": "d1"})
        mlflow.log_metrics({"test_accuracy": 0.99})
    _fake_study("sqlite:///optuna.db")

    notebook = _execute("compare_runs.ipynb", tmp_path, monkeypatch)
    text = _text(notebook)
    assert "6 finished runs with test metrics" in text
    assert "dataset cbis-ddsm-d2: 1 run, best test accuracy 0.9950 (other-data)" in text
    # the study trial (no data_source) ranks with the other d1 runs
    assert "dataset synthetic-d1: 5 runs, best test accuracy 0.9900 (trial-0)" in text
    ranking = text[text.index("dataset synthetic-d1") :]
    assert ranking.index("model5") < ranking.index("model4") < ranking.index("model0")  # ranked by test accuracy
    for variant, epochs, best in (("model0", 4, 3), ("model4", 3, 2), ("model5", 5, 4)):
        assert f"learning curves: {variant} {epochs} epochs, lowest val_loss at epoch {best}" in text

    matrix = _printed_table(text, "McNemar p-values (exact, two-sided) on 40 shared test patches:")
    assert list(matrix.index) == list(matrix.columns) == ["model0", "model4", "model5"]
    assert np.allclose(matrix.to_numpy(), matrix.to_numpy().T)
    assert np.allclose(np.diag(matrix.to_numpy()), 1.0)
    for a, b in (("model0", "model4"), ("model0", "model5"), ("model4", "model5")):
        expected = evaluation.mcnemar_test(labels, probabilities[a], probabilities[b])[0]
        assert matrix.loc[a, b] == pytest.approx(expected, abs=1e-6), (a, b)

    if importlib.util.find_spec("mammo.report.published") is not None:  # the published table
        beside = _printed_table(text, "ours beside the published test accuracy:").set_index("variant")
        assert list(beside.index) == ["model0", "model4", "model5"]
        assert beside.loc["model5", "published_test_accuracy"] == pytest.approx(0.8423)
        assert beside.loc["model0", "published_test_accuracy"] == pytest.approx(0.7292)
        assert beside.loc["model4", "test_accuracy"] == pytest.approx(right["model4"].mean(), abs=1e-4)
        assert "NOT comparable" in text  # the runs say data_source=synthetic
    else:
        assert "mammo.report.published is not available" in text

    assert f"study {space.DEFAULT_STUDY_NAME}: 6 trials (5 complete, 1 pruned, 0 failed)" in text
    plotly_figures = [output for output in _outputs(notebook) if PLOTLY_MIME in output.get("data", {})]
    assert len(plotly_figures) == 4  # history, parallel coordinates, slice, importances
