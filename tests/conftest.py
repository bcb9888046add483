"""Shared fixtures: every test gets its own MLflow tracking store under tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_CBIS = REPO_ROOT.parent / "shared" / "data" / "cbis-ddsm"


@pytest.fixture(autouse=True)
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A private SQLite tracking store (and artifact root) per test."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture(scope="session")
def shared_cbis() -> Path:
    if not SHARED_CBIS.is_dir():
        pytest.fail(f"reference data not found at {SHARED_CBIS}: clone the repo beside ../shared")
    return SHARED_CBIS
