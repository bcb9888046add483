"""Shared fixtures: every test gets its own MLflow tracking store under tmp_path."""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
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
# The real CBIS-DDSM reference files: beside the checkout by default, anywhere with the variable.
REFERENCE_VARIABLE = "MAMMO_CBIS_REFERENCE"
SHARED_CBIS = Path(os.environ.get(REFERENCE_VARIABLE) or REPO_ROOT.parent / "shared" / "data" / "cbis-ddsm").resolve()
REFERENCE_CSVS = (
    "mass_case_description_train_set.csv", "mass_case_description_test_set.csv",
    "calc_case_description_train_set.csv", "calc_case_description_test_set.csv",
)  # fmt: skip
# CI sets this: there a test that needs the reference files fails instead of skipping.
REQUIRE_REFERENCE_VARIABLE = "MAMMO_REQUIRE_REFERENCE"


def reference_missing() -> str | None:
    """Why the reference files cannot be used (one line naming the variable and what the folder holds), or None."""
    absent = [f"csv/{name}" for name in REFERENCE_CSVS if not (SHARED_CBIS / "csv" / name).is_file()]
    absent += [] if (SHARED_CBIS / "dicom").is_dir() else ["dicom/"]
    if not absent:
        return None
    return (
        f"real CBIS-DDSM reference files not found at {SHARED_CBIS} (missing {', '.join(absent[:2])}"
        f"{' …' if len(absent) > 2 else ''}): set {REFERENCE_VARIABLE} to a folder holding csv/ with the four "
        "TCIA case-description CSVs (your own download's serve) and dicom/ with the cropped-image DICOMs "
        "of Mass-Test_P_00016_LEFT_CC_1 and Mass-Test_P_00116_RIGHT_MLO_1/_2 (NBIA layout)"
    )


def require_reference() -> Path:
    """The reference folder; the test is skipped with the reason when it is absent (failed under CI's variable)."""
    reason = reference_missing()
    if reason is not None:
        if os.environ.get(REQUIRE_REFERENCE_VARIABLE) == "1":
            pytest.fail(f"{reason} ({REQUIRE_REFERENCE_VARIABLE}=1: required here)", pytrace=False)
        pytest.skip(reason)
    return SHARED_CBIS


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """`@pytest.mark.reference`: before any fixture of the test runs, the reference files must be there."""
    if item.get_closest_marker("reference") is not None:
        require_reference()


@pytest.fixture(autouse=True)
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A private SQLite tracking store (and artifact root) per test."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MAMMO_DATA_HOME", str(tmp_path / "data"))  # prepared data stays with the test
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    path = list(sys.path)  # a test's mlflow.pyfunc.load_model puts the model's code copy first; spawned
    yield uri  # workers of later tests inherit sys.path and would import that partial copy of `mammo`
    sys.path[:] = path
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture(scope="session")
def shared_cbis() -> Path:
    return require_reference()


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
