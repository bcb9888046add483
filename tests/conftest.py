"""Shared fixtures: every test gets its own MLflow tracking store under tmp_path."""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import signal
import socket
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

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


MAMMOGRAPHY = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image Storage - For Presentation


def make_dicom(
    pixels: np.ndarray, *, photometric: str = "MONOCHROME2", bits_stored: int = 16, series: str | None = None,
    study: str | None = None, patient: str = "TEST", **attrs: object,
) -> bytes:  # fmt: skip
    """A minimal valid greyscale DICOM file (bytes) holding `pixels` as uint16; any header keyword in `attrs`."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MAMMOGRAPHY
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = MAMMOGRAPHY, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality, ds.SeriesDescription = patient, "MG", "test image"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study or generate_uid(), series or generate_uid()
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def artifact_paths(run_id: str, path: str | None = None) -> set[str]:
    """Every artifact file of a run (recursively), as paths relative to the run's artifact root."""
    found: set[str] = set()
    for item in mlflow.MlflowClient().list_artifacts(run_id, path):
        found |= artifact_paths(run_id, item.path) if item.is_dir else {item.path}
    return found


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop_process_group(process: subprocess.Popen) -> None:
    """TERM then KILL the group a test started (the process was started with start_new_session)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)


def run_spawned(target, args: tuple, *, count: int, timeout: float) -> None:
    """Run `target(*args)` in `count` spawned processes at once (as separate workers would); all must exit 0."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=target, args=args) for _ in range(count)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=timeout)
        assert process.exitcode == 0
