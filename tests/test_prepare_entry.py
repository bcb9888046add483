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


@pytest.mark.slow
def test_prepare_logs_a_run_with_the_dataset_and_skip_report_and_a_rerun_is_a_no_op(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "small"
    argv = ["--cases", "40", "--image-size", "32", "--out", str(out), "--no-progress"]
    assert prepare_entry.main(argv) == 0
    assert list((tmp_path / "data" / "raw").iterdir())  # the synthetic tree went to the data home (MAMMO_DATA_HOME)
    info = json.loads((out / "dataset.json").read_text())
    assert info["count"] == 40 and info["counts"]["test"]["mass"] + info["counts"]["test"]["calcification"] > 0
    assert set(info["files"]) == {"patches.npy", "manifest.csv"}  # each file's size and SHA-256, for the checks
    assert f"prepared: {out}" in capsys.readouterr().out

    (run,) = _runs()
    assert run.data.params["data_digest"] == info["digest"] and run.data.metrics["patches"] == 40
    assert run.data.params["data_home"] == str(tmp_path / "data") and run.data.params["prepared_dir"] == str(out)
    assert run.inputs.dataset_inputs[0].dataset.digest == info["digest"]
    assert "dataset.json" in {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}

    # the same source and options again: a no-op that says so, same files
    before = (out / "patches.npy").stat().st_mtime_ns
    assert prepare_entry.main(argv) == 0
    assert "no-op" in capsys.readouterr().out
    assert (out / "patches.npy").stat().st_mtime_ns == before
    assert len(_runs()) == 1  # a no-op logs no run (it returns before MLflow is even imported)


def test_prepare_skips_and_reports_bad_records_with_their_reasons(tmp_path: Path, capsys) -> None:
    from tests.test_tensors import _write_tensors

    _write_tensors(tmp_path / "npy", size=32, bad_label=True)
    argv = ["--source", "tensors", "--data-dir", str(tmp_path / "npy"), "--on-error", "skip", "--out",
            str(tmp_path / "out"), "--no-progress"]  # fmt: skip
    assert prepare_entry.main(argv) == 0
    assert "skipped 2 records: {'unknown_label': 2}" in capsys.readouterr().out
    (run,) = _runs()
    assert run.data.metrics["skipped"] == 2
    assert tracking.SKIP_REPORT_FILE in {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}


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
