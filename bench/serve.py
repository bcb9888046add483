"""Serving latency: a real `mlflow models serve` against the same model in-process and the bare Keras call.

Logs model5 (float32, untrained: speed does not depend on the weights) the way training does
(`serving.log_model`, into a temporary SQLite tracking store), starts `mlflow models serve
--env-manager local` on loopback and sends, over one keep-alive connection, one request at a time:

    patch-1       one 150×150 patch in the compact `patch` column (base64 of its uint16 bytes)
    patch-32      32 patches the same way
    pixels-32     32 patches as JSON integer arrays (`{"inputs": {"pixels": [...]}}`)
    pixels-32-split  the same arrays as a `dataframe_split` table (MLflow parses it without a deep copy)
    dicom-1       the real reference crop DICOM, base64

For each it also times, in this process, MLflow's scoring function on the same request body (what
the server runs after HTTP: JSON parsing, schema enforcement, our predict, JSON output), the pyfunc
`predict` on the table that parsing yields, and for the patches the bare Keras `predict_on_batch`.
HTTP and in-process blocks alternate over rounds; p50/p95 and requests/s are over all of a side's
calls. Prints the patch-32 HTTP/in-process p50 ratio last (goal ≤ 2; one patch p50 ≤ 25 ms). Usage:

    python -m bench.serve [--rounds 3] [--out result.json]
    python -m bench.serve --quick
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench import load_average, machine, save_results

REPO = Path(__file__).resolve().parents[1]
DICOM = REPO.parent / "shared/data/cbis-ddsm/dicom/Mass-Test_P_00016_LEFT_CC_1/10-04-2016-DDSM-09887/1-cropped images-26184/000001.dcm"  # fmt: skip
CALLS = {"patch-1": 60, "patch-32": 8, "pixels-32": 4, "pixels-32-split": 4, "dicom-1": 40}  # per side and round
SIZE = 150


def log_model5(tracking_uri: str) -> str:
    """model5 logged as training logs it; returns its model URI."""
    import mlflow

    from mammo import tracking
    from mammo.model.variants import build_model, make_config
    from mammo.serve import serving

    mlflow.set_tracking_uri(tracking_uri)
    config = make_config("model5", precision="float32")
    model = build_model(config, dtype_policy="float32", pixel_stats=(0.5, 0.2))
    with tracking.start_run(run_name="bench-serve", experiment="bench-serve"):
        info = serving.log_model(model, image_size=config.image_size, input_example=make_patches(2))
    return info.model_uri


def make_patches(count: int) -> np.ndarray:
    """Mammogram-like uint16 patches (count, 150, 150): smooth, not binary (a mask would be refused)."""
    rng = np.random.default_rng(0)
    base = rng.integers(18000, 42000, size=(count, 1, 1))
    texture = rng.integers(0, 6000, size=(count, SIZE, SIZE))
    return (base + texture).astype(np.uint16)


def request_bodies(patches: np.ndarray) -> dict[str, bytes]:
    """The JSON bodies a client sends, encoded once (the client's own encoding is not timed)."""
    compact = [[base64.b64encode(patch.astype("<u2").tobytes()).decode()] for patch in patches]
    bodies = {
        "patch-1": {"dataframe_split": {"columns": ["patch"], "data": compact[:1]}},
        "patch-32": {"dataframe_split": {"columns": ["patch"], "data": compact}},
        "pixels-32": {"inputs": {"pixels": [patch.tolist() for patch in patches]}},
        "pixels-32-split": {"dataframe_split": {"columns": ["pixels"], "data": [[patch.tolist()] for patch in patches]}},
        "dicom-1": {"dataframe_split": {"columns": ["dicom"], "data": [[base64.b64encode(DICOM.read_bytes()).decode()]]}},
    }  # fmt: skip
    return {name: json.dumps(body).encode() for name, body in bodies.items()}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(model_uri: str, *, tracking_uri: str, log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow_cli), "models", "serve", "-m", model_uri, "--env-manager", "local", "-h", "127.0.0.1",
               "-p", str(port)]  # fmt: skip
    env = os.environ | {
        "MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{mlflow_cli.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    }  # fmt: skip
    with log.open("wb") as output:
        server = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True, cwd=log.parent
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow models serve exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                return server, port
        except OSError:
            pass
        time.sleep(0.5)
    stop_server(server)
    raise RuntimeError(f"no /ping answer within 300 s:\n{log.read_text()[-3000:]}")


def stop_server(server: subprocess.Popen) -> None:
    """The server and its uvicorn worker share one process group, which this benchmark started."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=15)


def http_call(port: int, body: bytes) -> Callable[[], object]:
    """One POST /invocations on a keep-alive connection, reopened after an idle spell (uvicorn closes
    idle connections after 5 s; a loopback connect costs ~0.1 ms)."""
    state: dict = {"connection": None, "last": 0.0}

    def call() -> object:
        if state["connection"] is None or time.monotonic() - state["last"] > 2:
            if state["connection"] is not None:
                state["connection"].close()
            state["connection"] = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        connection = state["connection"]
        connection.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = response.read()
        state["last"] = time.monotonic()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {payload[:500]!r}")
        return json.loads(payload)

    return call


def timed(call: Callable[[], object], count: int) -> list[float]:
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return seconds


def summary(seconds: list[float]) -> dict[str, float]:
    values = np.asarray(seconds) * 1000
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 2),
        "p95_ms": round(float(np.percentile(values, 95)), 2),
        "requests_per_s": round(1000 * len(values) / float(values.sum()), 2),
        "calls": len(values),
    }


def in_process_sides(model_uri: str, bodies: dict[str, bytes], patches: np.ndarray) -> dict[str, dict]:
    """Per request kind: {side: call} for MLflow's scoring function, the pyfunc and bare Keras."""
    import mlflow
    from mlflow.pyfunc import scoring_server

    from mammo.core.pixels import scale_patches
    from mammo.serve import serving

    pyfunc = mlflow.pyfunc.load_model(model_uri)
    keras_model = serving.classifier(pyfunc).model
    schema = pyfunc.metadata.get_input_schema()
    sides: dict[str, dict] = {}
    for name, body in bodies.items():
        table = scoring_server.infer_and_parse_data(json.loads(body), schema)  # what the server hands to predict

        def score(body: bytes = body) -> object:
            result = scoring_server.invocations(body, "application/json", pyfunc, schema)
            if result.status != 200:
                raise RuntimeError(f"scoring failed: {result.response[:500]}")
            return result

        sides[name] = {"scoring_function": score, "pyfunc": lambda table=table: pyfunc.predict(table)}
        if name.startswith("patch") or name == "pixels-32":
            batch = patches[: 1 if name == "patch-1" else len(patches)]
            sides[name]["keras_predict_on_batch"] = lambda batch=batch: keras_model.predict_on_batch(
                scale_patches(batch)
            )
    return sides


def measure(*, rounds: int, calls: dict[str, int], scratch: Path) -> dict[str, object]:
    tracking_uri = f"sqlite:///{scratch / 'mlflow.db'}"
    model_uri = log_model5(tracking_uri)
    patches = make_patches(32)
    bodies = request_bodies(patches)
    started = time.perf_counter()
    server, port = start_server(model_uri, tracking_uri=tracking_uri, log=scratch / "serve.log")
    startup = time.perf_counter() - started
    try:
        sides = in_process_sides(model_uri, bodies, patches)
        for name, body in bodies.items():
            sides[name] = {"http": http_call(port, body), **sides[name]}
        samples: dict[str, dict[str, list[float]]] = {name: {side: [] for side in sides[name]} for name in sides}
        for name in sides:  # warm-up: first calls trace the predict function
            for call in sides[name].values():
                call()
        for number in range(rounds):
            for name in sides:
                order = list(sides[name])
                for side in order if number % 2 == 0 else order[::-1]:  # alternate, so drift hits both sides
                    samples[name][side] += timed(sides[name][side], calls[name])
            print(f"round {number + 1}/{rounds} done", flush=True)
    finally:
        stop_server(server)
    results = {name: {side: summary(values) for side, values in by_side.items()} for name, by_side in samples.items()}
    return {
        "model_uri": model_uri, "server_start_s": round(startup, 1), "rounds": rounds,
        "body_bytes": {name: len(body) for name, body in bodies.items()}, "latency": results,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 round, a few calls each: a smoke run")
    parser.add_argument("--out", help="write the figures as JSON here too")
    args = parser.parse_args(argv)
    rounds, calls = (
        (1, {name: max(2, count // 8) for name, count in CALLS.items()}) if args.quick else (args.rounds, CALLS)
    )
    before = machine()
    with tempfile.TemporaryDirectory() as scratch:
        figures = measure(rounds=rounds, calls=calls, scratch=Path(scratch))
    results = {**before, "load_average_after": load_average(), **figures}
    latency = figures["latency"]
    print(f"{results['cpu']}, {results['date']}; load {results['load_average']} -> {results['load_average_after']}")
    for name, by_side in latency.items():
        print(f"{name:>9} ({figures['body_bytes'][name]:>8} B): " + "; ".join(
            f"{side} p50 {row['p50_ms']:.1f} ms p95 {row['p95_ms']:.1f} ms {row['requests_per_s']:.1f}/s"
            for side, row in by_side.items()
        ))  # fmt: skip
    one = latency["patch-1"]["http"]["p50_ms"]
    ratio = latency["patch-32"]["http"]["p50_ms"] / latency["patch-32"]["pyfunc"]["p50_ms"]
    results["ratio_patch32_http_to_pyfunc"] = round(ratio, 2)
    print(f"one patch over HTTP p50: {one:.1f} ms (goal ≤ 25 ms)")
    print(
        f"pixels-32 HTTP/pyfunc p50: {latency['pixels-32']['http']['p50_ms'] / latency['pixels-32']['pyfunc']['p50_ms']:.2f}"
    )
    save_results(results, args.out)
    print(f"ratio batch-32 (compact) HTTP/in-process p50: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
