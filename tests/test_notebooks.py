"""The notebooks run top to bottom (nbclient, a real kernel) on tiny data."""

from __future__ import annotations

from pathlib import Path

import mlflow
import nbformat
import pytest
from nbclient import NotebookClient

from mammo import tracking
from tests.conftest import REPO_ROOT


def _execute(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    notebook = nbformat.read(REPO_ROOT / "notebooks" / name, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    return "\n".join(
        output.get("text", "") + str(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


def test_explore_notebook_prepares_and_describes_the_synthetic_default(tmp_path, monkeypatch) -> None:
    text = _execute("explore_data.ipynb", tmp_path, monkeypatch, MAMMO_NOTEBOOK_CASES="48")
    assert "calcification" in text and "mass" in text
    assert (tmp_path / "data" / "prepared" / "synthetic" / "patches.npy").is_file()


def test_compare_notebook_ranks_finished_runs(tmp_path, monkeypatch) -> None:
    tracking.use_experiment()
    for name, accuracy in (("model4", 0.8), ("model5", 0.9)):
        with mlflow.start_run(run_name=name):
            mlflow.log_params({"variant": name, "seed": 0})
            mlflow.log_metrics({"test_accuracy": accuracy, "test_accuracy_ci_low": accuracy - 0.05,
                                "test_accuracy_ci_high": accuracy + 0.04, "test_auc": 0.9, "val_auc": 0.9})  # fmt: skip
    text = _execute("compare_runs.ipynb", tmp_path, monkeypatch)
    assert "2 finished runs with test metrics" in text
    assert text.index("model5") < text.index("model4")  # ranked by test accuracy
