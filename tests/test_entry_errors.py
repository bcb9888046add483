"""No raw tracebacks: every entry point answers the errors a user can cause with one line and exit status 2.

Each case runs the entry point's `main` in-process (a traceback would be an exception escaping it);
two run as real processes, the way a user meets them, and their stderr is read whole.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT

UNREACHABLE_PG = "postgresql://mammo:secret@127.0.0.1:1/nowhere"


def _bad_files(root: Path) -> dict[str, Path]:
    """Folders a user might point an entry point at by mistake."""
    corrupt = root / "corrupt-dataset"
    corrupt.mkdir()
    (corrupt / "patches.npy").write_bytes(b"not numpy")
    (corrupt / "manifest.csv").write_text("index,label\n0,1\n")
    (corrupt / "dataset.json").write_text("{ not json")
    tensors = root / "tensors"
    tensors.mkdir()
    for name in ("train_tensor.npy", "train_labels.npy", "public_test_tensor.npy", "public_test_labels.npy"):
        (tensors / name).write_bytes(b"\x93NUMPY garbage")
    images = root / "images"
    images.mkdir()
    np.save(images / "patch.npy", np.ones((8, 8), np.uint16))
    return {"corrupt": corrupt, "tensors": tensors, "images": images, "missing": root / "missing"}


CASES = [
    ("prepare", ["--source", "cbis-ddsm"], "--data-dir"),
    ("prepare", ["--image-size", "4"], "--image-size must be between 16 and 1024"),
    ("prepare", ["--source", "cbis-ddsm", "--data-dir", "{missing}"], "--data-dir {missing} is not a folder"),
    ("prepare", ["--source", "tensors", "--data-dir", "{tensors}", "--out", "{root}/out"], "not a plain numpy array"),
    ("train", ["--dropout", "2"], "parameter dropout=2.0 is invalid"),
    ("train", ["--filters", "abc"], "parameter filters"),
    ("train", ["--threshold", "sensitivity:2"], "parameter threshold='sensitivity:2' is invalid"),
    ("train", ["--data", "{missing}"], "is not a complete prepared dataset"),
    ("train", ["--data", "{corrupt}"], "dataset.json is not valid JSON"),
    ("train_all", ["--variants", "model9"], "--variants: unknown ['model9']"),
    ("train_all", ["--seeds", "x"], "--seeds 'x'"),
    ("study", ["--n-trials", "0"], "--n-trials must be at least 1"),
    ("study", ["--metric", "test_accuracy"], "is a test metric"),
    ("study", ["--storage", UNREACHABLE_PG, "--n-trials", "1"], "port 1 failed: Connection refused"),
    ("study", ["--data", "{corrupt}"], "dataset.json is not valid JSON"),
    ("promote", ["--alias", "latest"], "reserved"),
    ("promote", ["--gate-metric", "auc"], "--gate-metric must be one of"),
    ("promote", ["--experiment", "nosuch"], "experiment 'nosuch' does not exist"),
    ("promote", ["--run-id", "0123456789abcdef"], "no such run"),
    ("evaluate", ["--model-uri", "models:/mammo-cnn@nobody"], "mammo-cnn"),
    ("evaluate", ["--model-uri", "runs:/0123456789abcdef/model"], "0123456789abcdef"),
    ("evaluate", ["--model-uri", "models:/mammo-cnn/1", "--data", "{missing}"], "is not a complete prepared dataset"),
    ("predict", ["--input", "{missing}"], "does not exist"),
    ("predict", ["--input", "{images}", "--model-uri", "models:/nobody@champion"], "nobody"),
]


@pytest.mark.parametrize(("entry", "argv", "message"), CASES, ids=[f"{c[0]}:{' '.join(c[1])[:40]}" for c in CASES])
def test_bad_input_gets_one_line_and_exit_status_2(
    entry: str, argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = {name: str(path) for name, path in _bad_files(tmp_path).items()} | {"root": str(tmp_path)}
    module = importlib.import_module(f"entrypoints.{entry}")
    code = module.main([arg.format(**paths) for arg in argv] + (["--no-progress"] if entry == "prepare" else []))
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith(f"{entry}: error:")]
    assert len(lines) == 1 and message.format(**paths) in lines[0], err
    assert "Traceback" not in err and "secret" not in err  # a URL's password never reaches the terminal


def test_an_unreachable_tracking_server_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    import mlflow

    from entrypoints import promote

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    mlflow.set_tracking_uri("http://127.0.0.1:9")
    assert promote.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("promote: error: the MLflow tracking server could not be reached") and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            [
                "-m",
                "entrypoints.study",
                "--storage",
                UNREACHABLE_PG,
                "--n-trials",
                "1",
                "--epochs",
                "1",
                "--data",
                "{prepared}",
            ],
            "study: error: the database refused or could not be reached",
        ),
        (["-m", "entrypoints.train", "--data", "{missing}"], "train: error:"),
    ],
    ids=["study-unreachable-postgres", "train-missing-data"],
)
@pytest.mark.slow
def test_real_processes_print_no_traceback(argv: list[str], message: str, tmp_path: Path) -> None:
    from tests.test_pipeline import make_speck_dataset

    prepared = make_speck_dataset(tmp_path / "prepared", size=32, train_patients=4, test_patients=2).path
    paths = {"prepared": str(prepared), "missing": str(tmp_path / "missing")}
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, *[arg.format(**paths) for arg in argv]], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "secret" not in result.stderr  # the URL's password is hidden in the message
