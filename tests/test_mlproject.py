"""`mlflow run . -e <entry> --env-manager local`: the MLproject as a user runs it (no conda)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from mammo import tracking
from tests.conftest import REPO_ROOT


def mlflow_run(entry: str, *params: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mlflow", "run", str(REPO_ROOT), "-e", entry, "--env-manager", "local"]
    for param in params:
        command += ["-P", param]
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["MLFLOW_EXPERIMENT_NAME"] = tracking.EXPERIMENT  # as `make` exports it (README)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0 or not check, (
        f"mlflow run -e {entry} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    )
    return result


@pytest.mark.slow
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
    blank = {key for run in runs for key, value in run.data.params.items() if value == ""}
    assert not blank, f"params logged as '': {blank}"


def test_every_cli_flag_is_an_mlproject_parameter_with_a_non_blank_default() -> None:
    """`mlflow run -P name=…` reaches every flag, and MLflow (which logs every parameter) never logs ''."""
    import importlib

    import yaml

    entry_points = yaml.safe_load((REPO_ROOT / "MLproject").read_text())["entry_points"]
    for name, entry in entry_points.items():
        module = importlib.import_module(entry["command"].split()[2])
        parser_flags = set()
        for action in _parser_of(module).__dict__["_actions"]:
            parser_flags |= {flag[2:].replace("-", "_") for flag in action.option_strings if flag.startswith("--")}
        hyperparameters = {"filters", "dense_units", "dropout", "l2", "learning_rate", "lr_decay", "batch_size",
                           "epochs", "patience", "augment", "image_size", "seed", "split_by", "val_fraction",
                           "standardize", "threshold", "weights", "unfreeze_blocks", "finetune_learning_rate",
                           "head_epochs"}  # fmt: skip
        declared = set(entry["parameters"])
        undeclared = parser_flags - declared - {"help", "experiment"}
        if name in ("train", "train_all", "main"):
            undeclared -= hyperparameters  # passed as undeclared -P overrides, as the README says
        assert not undeclared, f"{name}: flags not in the MLproject: {sorted(undeclared)}"
        assert declared <= parser_flags, f"{name}: parameters the CLI does not take: {sorted(declared - parser_flags)}"
        blank = [param for param, spec in entry["parameters"].items() if str(spec.get("default", "x")).strip() == ""]
        assert not blank, f"{name}: blank defaults would be logged as '': {blank}"


def _parser_of(module):
    """The entry point's argparse parser, captured from its parse_args without running anything."""
    import argparse

    captured = {}
    original = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        captured["parser"] = self
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = capture
    try:
        module.parse_args(["--help"])
    except SystemExit:
        pass
    finally:
        argparse.ArgumentParser.parse_args = original
    return captured["parser"]


@pytest.mark.slow
def test_a_second_dataset_in_the_same_experiment_is_promoted_only_when_named(tmp_path: Path) -> None:
    """The researcher's flow: the synthetic run, then their own data trained beside it, then promote."""
    first, second = tmp_path / "synthetic", tmp_path / "own"
    small = ("epochs=1", "image_size=48", "batch_size=16")
    mlflow_run("prepare", "cases=48", f"out={first}", "image_size=48", cwd=tmp_path)
    mlflow_run("train", f"data={first}", *small, cwd=tmp_path)
    mlflow_run("prepare", "cases=48", "seed=1", f"out={second}", "image_size=48", cwd=tmp_path)
    mlflow_run("train", f"data={second}", *small, cwd=tmp_path)
    trained = mlflow.search_runs(
        experiment_names=[tracking.EXPERIMENT], filter_string="tags.`mammo.entry` = 'train'", output_format="list"
    )
    assert len(trained) == 2 and len({run.data.tags[tracking.DATASET_TAG] for run in trained}) == 2
    own = next(run for run in trained if run.data.params["data_digest"] == _digest(second))

    refused = mlflow_run("promote", cwd=tmp_path, check=False)
    assert refused.returncode != 0
    assert "holds runs on 2 prepared datasets" in refused.stderr and "--data" in refused.stderr
    for folder in (first, second):
        assert f"{_digest(folder)} (synthetic, " in refused.stderr
    assert MlflowClient().search_registered_models() == []  # nothing registered

    promoted = mlflow_run("promote", f"data={second}", cwd=tmp_path)
    assert "PROMOTED" in promoted.stdout, promoted.stdout
    champion = MlflowClient().get_model_version_by_alias(tracking.MODEL_NAME, tracking.ALIAS_CHAMPION)
    assert champion.run_id == own.info.run_id and champion.tags["gate_data_digest"] == _digest(second)


def _digest(folder: Path) -> str:
    import json

    return json.loads((folder / "dataset.json").read_text())["digest"]
