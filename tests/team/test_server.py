"""The team's tracking server (`.ci/mlflow-server.sh`): auth refuses what it must, and the whole chain runs through it.

train → promote → evaluate → predict → `mlflow models serve -m models:/mammo-cnn@champion`, all
with MLFLOW_TRACKING_URI on the authenticated server: artifacts are uploaded to and downloaded from
the server (the runs' artifact URIs are `mlflow-artifacts:`, stored under the server's
--artifacts-destination), never read from the client's disk. An anonymous client cannot create a
run or move an alias, no default admin password works, and a READ-only user cannot promote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client

from entrypoints import evaluate, predict, promote, train
from mammo import tracking
from mammo.serve import serving
from tests.team.conftest import READER, TRAINER, TeamServer, free_port, stop_process_group
from tests.test_study_entry import write_tiny_dataset

CHAMPION = f"models:/{tracking.MODEL_NAME}@{tracking.ALIAS_CHAMPION}"
TINY_TRAIN = ["--epochs", "1", "--image-size", "32", "--filters", "8-16", "--dense-units", "8", "--batch-size", "8",
              "--precision", "float32"]  # fmt: skip
SERVE_START_S = 120

pytestmark = pytest.mark.slow


def _refused(call, *args, **kwargs) -> str:
    with pytest.raises(MlflowException) as caught:
        call(*args, **kwargs)
    return str(caught.value)


def test_no_default_or_anonymous_access(team_server: TeamServer) -> None:
    for user, password in (("admin", "password1234"), ("admin", ""), (None, None)):
        request = urllib.request.Request(f"{team_server.url}/api/2.0/mlflow/experiments/search?max_results=1")
        if user is not None:
            import base64

            request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 401, (user, password)
    assert "experiments" in team_server.request("GET", "/api/2.0/mlflow/experiments/search?max_results=1")


def test_train_promote_evaluate_predict_serve_through_the_server(
    team_server: TeamServer, as_user, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = write_tiny_dataset(tmp_path / "tiny")

    as_user(None)  # anonymous: nothing may be written
    assert "401" in _refused(MlflowClient().create_experiment, "anonymous")

    as_user(TRAINER)
    assert train.main(["--data", str(dataset.path), *TINY_TRAIN]) == 0
    experiment = mlflow.get_experiment_by_name(tracking.EXPERIMENT)
    assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == tracking.EXPERIMENT_KIND
    (run,) = MlflowClient().search_runs([experiment.experiment_id], "tags.`mammo.entry` = 'train'")
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied: clients hold no storage path
    stored = {path.name for path in team_server.artifacts.rglob("*") if path.is_file()}
    assert {"MLmodel", "predictions.csv", "curves.png"} <= stored  # uploaded through the server

    # The team recipe (docs/team.md): the admin registers the model once and grants who may promote.
    # (Without it the first promote stops: basic auth answers 403, not 404, to an alias lookup on a
    # model that does not exist yet, and registry.py reads 403 as a failure, as it should.)
    as_user("admin")
    MlflowClient().create_registered_model(tracking.MODEL_NAME)
    admin = get_app_client("basic-auth", tracking_uri=team_server.url)
    admin.grant_user_permission(TRAINER, "registered_model", tracking.MODEL_NAME, "MANAGE")
    as_user(TRAINER)
    assert promote.main([]) == 0
    assert f"{tracking.ALIAS_CHAMPION} -> version 1" in capsys.readouterr().out

    as_user(None)
    assert "401" in _refused(MlflowClient().create_run, experiment.experiment_id)
    assert "401" in _refused(MlflowClient().set_registered_model_alias, tracking.MODEL_NAME, "champion", "1")
    as_user(READER)  # signed in, READ by default: sees everything, changes nothing
    assert MlflowClient().get_model_version_by_alias(tracking.MODEL_NAME, tracking.ALIAS_CHAMPION).version == "1"
    assert promote.main(["--run-id", run.info.run_id]) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error and len(error.strip().splitlines()) == 1, error
    assert "promote: error:" in error and ("403" in error or "PERMISSION_DENIED" in error), error
    assert "403" in _refused(MlflowClient().set_registered_model_alias, tracking.MODEL_NAME, "champion", "1")
    versions = MlflowClient().search_model_versions(f"name = '{tracking.MODEL_NAME}'")
    assert [version.version for version in versions] == ["1"]  # nothing registered, no alias moved

    as_user(TRAINER)
    assert evaluate.main(["--model-uri", CHAMPION, "--data", str(dataset.path), "--no-plots"]) == 0
    assert "test_accuracy" in capsys.readouterr().out
    patches = tmp_path / "patches"
    patches.mkdir()
    for index in (0, 1, 40):
        np.save(patches / f"patch{index}.npy", np.asarray(dataset.patches[index]))
    assert predict.main(["--model-uri", CHAMPION, "--input", str(patches), "--output", str(tmp_path / "p.csv")]) == 0
    table = pd.read_csv(tmp_path / "p.csv")
    assert len(table) == 3 and table["p_calcification"].between(0, 1).all()

    served = _serve_and_score(team_server, tmp_path, np.asarray(dataset.patches[[0, 1]]))
    assert len(served) == 2 and all(0 <= p <= 1 for p in served)


def _serve_and_score(team_server: TeamServer, tmp_path: Path, pixels: np.ndarray) -> list[float]:
    """`mlflow models serve` of the champion, the model downloaded through the server as the trainer."""
    port, log = free_port(), tmp_path / "serve.log"
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    env = {**os.environ, **team_server.env(TRAINER), "PATH": f"{mlflow_cli.parent}{os.pathsep}{os.environ['PATH']}"}
    command = [str(mlflow_cli), "models", "serve", "-m", CHAMPION, "--env-manager", "local", "-h", "127.0.0.1",
               "-p", str(port)]  # fmt: skip
    with log.open("wb") as output:
        server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVE_START_S
        while True:
            assert server.poll() is None, f"mlflow models serve exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no /ping within {SERVE_START_S} s:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
        payload = json.dumps({"inputs": {"pixels": [patch.tolist() for patch in pixels]}}).encode()
        request = urllib.request.Request(f"{url}/invocations", data=payload, method="POST",
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=60) as response:
            predictions = json.loads(response.read())["predictions"]
    finally:
        stop_process_group(server)
    if isinstance(predictions[0], dict):
        return [float(row[serving.OUTPUT_COLUMN]) for row in predictions]
    return [float(value) for value in np.asarray(predictions, dtype=float).reshape(-1)]
