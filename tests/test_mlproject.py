"""`mlflow run . -e <entry> --env-manager local`: the MLproject as a user runs it (no conda)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow

from mammo import tracking
from tests.conftest import REPO_ROOT


def mlflow_run(entry: str, *params: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mlflow", "run", str(REPO_ROOT), "-e", entry, "--env-manager", "local"]
    for param in params:
        command += ["-P", param]
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["MLFLOW_EXPERIMENT_NAME"] = tracking.EXPERIMENT  # as `make` exports it (README)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"mlflow run -e {entry} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def test_prepare_then_train_through_mlflow_run(tmp_path: Path) -> None:
    prepared = tmp_path / "prepared"
    mlflow_run("prepare", "cases=48", f"out={prepared}", "image_size=48", cwd=tmp_path)
    assert (prepared / "dataset.json").is_file()
    mlflow_run(
        "train", "variant=model5", f"data={prepared}", "epochs=1", "image_size=48", "batch_size=16", cwd=tmp_path
    )
    runs = mlflow.search_runs(experiment_names=[tracking.EXPERIMENT], output_format="list")
    entries = sorted(run.data.tags.get("mlflow.project.entryPoint") for run in runs)
    assert entries == ["prepare", "train"]
    (train,) = [run for run in runs if run.data.tags.get("mlflow.project.entryPoint") == "train"]
    assert train.info.status == "FINISHED"
    assert set(tracking.FINAL_METRICS) <= set(train.data.metrics)
    assert train.data.params["variant"] == "model5" and train.data.params["image_size"] == "48"
