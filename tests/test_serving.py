"""The served champion: `mlflow models serve` answers base64 DICOM and pixel arrays, and 400s bad input.

One real server process (`--env-manager local`, loopback, a free port, this test's tracking
store) — it dominates the suite's time, so every request goes to the same server. The waits are
bounded and the server's process group is always killed.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
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

from mammo import registry, tracking
from mammo.data.dicom import patch_from_dicom
from tests.test_registry import SIZE, log_training_run, make_dataset, threshold_model

CHAMPION = f"models:/{tracking.MODEL_NAME}@{tracking.ALIAS_CHAMPION}"
DICOM = Path("dicom/Mass-Test_P_00016_LEFT_CC_1/10-04-2016-DDSM-09887/1-cropped images-26184/000001.dcm")
PING_TIMEOUT_S = 90


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _wait_for_ping(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + PING_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow models serve exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    pytest.fail(f"no /ping answer within {PING_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def _stop(server: subprocess.Popen) -> None:
    """The server and its uvicorn workers share one process group, which only this test started."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=15)


@pytest.fixture
def champion(tmp_path: Path) -> str:
    dataset = make_dataset(tmp_path / "prepared")
    registry.promote(run_id=log_training_run(dataset, threshold_model(0.65), val_auc=0.7))
    return CHAMPION


def test_the_served_champion_scores_dicom_and_pixels_and_rejects_bad_input(
    champion: str, shared_cbis: Path, tmp_path: Path
) -> None:
    dicom_bytes = (shared_cbis / DICOM).read_bytes()
    expected = registry.probabilities_of(
        mlflow.pyfunc.load_model(champion).predict(patch_from_dicom(dicom_bytes, size=SIZE)[0][None])
    )
    port, log = _free_port(), tmp_path / "serve.log"
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    command = [
        str(mlflow_cli),
        "models",
        "serve",
        "-m",
        champion,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    # The CLI runs `uvicorn` by name: the venv's bin must be on PATH, as it is once the venv is activated.
    env = {**os.environ, "PATH": f"{mlflow_cli.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with log.open("wb") as output:
        server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_ping(url, server, log)
        encoded = base64.b64encode(dicom_bytes).decode()
        status, body = _post(f"{url}/invocations", {"dataframe_split": {"columns": ["dicom"], "data": [[encoded]]}})
        assert status == 200, body
        served = registry.probabilities_of(
            pd.DataFrame(body["predictions"]) if isinstance(body["predictions"][0], dict) else body["predictions"]
        )
        assert served == pytest.approx(expected, abs=1e-6) and 0 <= served[0] <= 1  # the same preprocessing as prepare

        pixels = np.full((40, 30), 0.9 * 65535).astype(int) + np.arange(30)  # any size: resized inside the model
        status, body = _post(f"{url}/invocations", {"inputs": {"pixels": [pixels.tolist()]}})
        assert status == 200, body

        bad = [
            ({"dataframe_split": {"columns": ["dicom"], "data": [["%%% not base64 %%%"]]}}, "not valid base64"),
            ({"dataframe_split": {"columns": ["dicom"], "data": [[base64.b64encode(b"hello").decode()]]}}, "not a readable DICOM"),
            ({"dataframe_split": {"columns": ["image"], "data": [["x"]]}}, "expected a column 'dicom'"),
            ({"inputs": {"pixels": [[[0, 65535], [65535, 0]]]}}, "ROI mask"),
        ]  # fmt: skip
        for payload, message in bad:
            status, body = _post(f"{url}/invocations", payload)
            assert status == 400 and body["error_code"] in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST"), body
            assert message in body["message"], body["message"][-500:]
    finally:
        _stop(server)
