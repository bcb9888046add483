"""The prepare entry point: real CBIS-DDSM reference files, the MLflow run it logs, the no-op rerun."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from entrypoints import prepare as prepare_entry
from mammo import tracking


def _runs() -> list[mlflow.entities.Run]:
    return mlflow.search_runs(experiment_names=[tracking.EXPERIMENT], output_format="list")


def test_prepare_real_reference_files_keeps_three_and_reports_the_rest(
    shared_cbis: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "real"
    argv = [
        "--source", "cbis-ddsm", "--data-dir", str(shared_cbis / "dicom"), "--csv-dir", str(shared_cbis / "csv"),
        "--on-error", "skip", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    assert prepare_entry.main(argv) == 0
    info = json.loads((out / "dataset.json").read_text())
    assert info["count"] == 3 and info["counts"]["test"] == {"mass": 3, "calcification": 0}
    assert info["skipped"] == 3565 and info["skipped_reasons"] == {"missing_file": 3565}
    assert "skipped 3565 records" in capsys.readouterr().out

    (run,) = _runs()
    assert run.data.params["data_digest"] == info["digest"] and run.data.metrics["skipped"] == 3565
    assert run.inputs.dataset_inputs[0].dataset.digest == info["digest"]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"dataset.json", tracking.SKIP_REPORT_FILE} <= artifacts

    # the same source and options again: a no-op that says so, same digest
    before = (out / "patches.npy").stat().st_mtime_ns
    assert prepare_entry.main(argv) == 0
    assert "no-op" in capsys.readouterr().out
    assert (out / "patches.npy").stat().st_mtime_ns == before


def test_prepare_raise_policy_stops_with_a_message_naming_the_row(shared_cbis: Path, tmp_path: Path, capsys) -> None:
    argv = ["--source", "cbis-ddsm", "--data-dir", str(shared_cbis / "dicom"), "--csv-dir", str(shared_cbis / "csv")]
    assert prepare_entry.main([*argv, "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    message = capsys.readouterr().err
    assert "case_description" in message and "--on-error skip" in message
    assert not (tmp_path / "x" / "patches.npy").exists()


def test_prepare_rejects_bad_parameters_by_name(capsys) -> None:
    assert prepare_entry.main(["--source", "cbis-ddsm", "--no-progress"]) == 2
    assert "--data-dir" in capsys.readouterr().err
    assert prepare_entry.main(["--image-size", "4", "--no-progress"]) == 2
    assert "--image-size" in capsys.readouterr().err
