"""`python -m entrypoints.study` on a tiny prepared dataset: runs, resume, pruning, parallel workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from entrypoints import study as study_entry
from mammo import tracking
from mammo.data.store import PreparedDataset, write_prepared
from mammo.search import space, study_report
from mammo.search.study import ERROR_TAG, TRACEBACK_FILE, settings_from_options
from mammo.serve import serving

REPO_ROOT = Path(__file__).resolve().parents[1]
# Model 5's four valid 3×3 conv + 2×2 pool blocks need ≥ 46 pixels (see space.min_image_size), so
# the smallest study that still contains Model 5 trains at 48×48, not 32×32.
TINY_SIZE = 48
FAST = ["--epochs", "1", "--quiet", "--sampler", "random"]
PARENT_NAME = f"study-{space.DEFAULT_STUDY_NAME}"


def write_tiny_dataset(out: Path, *, train: int = 36, test: int = 12, size: int = TINY_SIZE) -> PreparedDataset:
    """A few dozen noisy patches, masses as faint blobs and calcifications as faint specks."""
    rng = np.random.default_rng(0)
    count = train + test
    labels = np.arange(count) % 2
    rows, columns = np.mgrid[:size, :size]
    patches = rng.normal(20000, 6000, (count, size, size))
    blob = np.exp(-((rows - size / 2) ** 2 + (columns - size / 2) ** 2) / (2 * (size / 6) ** 2))
    for position, label in enumerate(labels):
        if label == 0:
            patches[position] += 9000 * blob
        else:
            for row, column in rng.integers(4, size - 4, (10, 2)):
                patches[position, row - 1 : row + 2, column - 1 : column + 2] += 12000
    manifest = pd.DataFrame({
        "patient_id": [f"P{i:03d}" for i in range(count)], "case_id": [f"C{i}" for i in range(count)],
        "side": "LEFT", "view": "CC", "abnormality_id": 1, "label": labels,
        "abnormality_type": np.where(labels == 0, "mass", "calcification"), "pathology": "BENIGN",
        "breast_density": 2, "subtlety": 3,
        "split": ["train"] * train + ["test"] * test, "source_file": "tiny", "index": 0,
    })  # fmt: skip
    patches = np.clip(patches, 0, 65535).astype(np.uint16)
    return write_prepared(out, patches=patches, manifest=manifest, source="tiny", options={"size": size})


@pytest.fixture
def tiny(tmp_path: Path) -> PreparedDataset:
    return write_tiny_dataset(tmp_path / "tiny")


def _runs(**filters: str) -> list[mlflow.entities.Run]:
    experiment = mlflow.get_experiment_by_name(tracking.EXPERIMENT)
    query = " and ".join(f"tags.`{key}` = '{value}'" for key, value in filters.items())
    return MlflowClient().search_runs([experiment.experiment_id], filter_string=query, max_results=1000)


def _artifacts(run_id: str, path: str) -> set[str]:
    return {item.path for item in MlflowClient().list_artifacts(run_id, path)}


def test_rejects_test_metric_and_bad_storage(capsys: pytest.CaptureFixture[str]) -> None:
    assert study_entry.main(["--metric", "test_accuracy"]) == 2
    assert "test_accuracy is a test metric" in capsys.readouterr().err
    assert study_entry.main(["--storage", "optuna.db"]) == 2
    assert "journal:./optuna.journal" in capsys.readouterr().err
    assert study_entry.main(["--max-trials", "0"]) == 2
    assert "--max-trials must be at least 1" in capsys.readouterr().err


def test_unreachable_storage_is_one_line_without_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    """A refused connection (port 1), one line naming the fix, exit 2, before TensorFlow trains."""
    assert study_entry.main(["--storage", "postgresql://u:pw-xyzzy@127.0.0.1:1/db"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in error, error
    assert error.startswith("study: error: the database refused or could not be reached") and "PGPASSWORD" in error
    assert "pw-xyzzy" not in error
    assert space.storage_has_password("postgresql://u:pw@h/db") and not space.storage_has_password(
        "postgresql://u@h/db"
    )
    assert space.describe_storage("postgres://u:pw@h/db") == "postgresql://u:***@h/db"


def test_empty_mlproject_values_mean_defaults() -> None:
    args = study_entry.parse_args(["--study-name", "", "--storage", "", "--seed", "", "--epochs", "", "--timeout", ""])
    settings = settings_from_options(vars(args))
    assert settings.study_name == space.DEFAULT_STUDY_NAME and settings.storage == space.DEFAULT_STORAGE
    assert settings.seed == 0
    assert settings.epochs is None and settings.timeout is None and settings.n_trials == 20
    assert settings.max_trials is None
    budget = settings_from_options(vars(study_entry.parse_args(["--max-trials", "60", "--n-trials", ""])))
    assert (budget.max_trials, budget.n_trials) == (60, None)  # a worker runs until the study has 60


@pytest.mark.slow
def test_study_logs_trials_plots_and_best_then_resumes(
    tiny: PreparedDataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = f"sqlite:///{tmp_path}/optuna.db"
    argv = ["--data", str(tiny.path), "--storage", storage, "--n-trials", "2", *FAST]
    assert study_entry.main(argv) == 0

    (parent,) = _runs(**{tracking.STUDY_TAG: space.DEFAULT_STUDY_NAME, "mlflow.runName": PARENT_NAME})
    trials = _runs(**{"mlflow.parentRunId": parent.info.run_id})
    assert sorted(run.data.tags[tracking.TRIAL_NUMBER_TAG] for run in trials) == ["0", "1"]
    for run in trials:
        assert run.data.tags[tracking.TRIAL_STATE_TAG] == "complete" and run.info.status == "FINISHED"
        assert {"val_auc", "test_accuracy", tracking.OPTUNA_VALUE} <= set(run.data.metrics)
        assert len(MlflowClient().get_metric_history(run.info.run_id, "val_auc")) == 1  # one point per epoch
    model5 = next(run for run in trials if run.data.tags[tracking.TRIAL_NUMBER_TAG] == "0")
    assert model5.data.params["filters"] == "32-64-128-256" and model5.data.params["variant"] == "model5"

    assert parent.data.metrics["trials_complete"] == 2 and parent.data.metrics["trials_failed"] == 0
    assert "best_value" in parent.data.metrics and "best_dropout" in parent.data.params
    assert _artifacts(parent.info.run_id, "plots") == {
        tracking.PLOT_OPTUNA_HISTORY, tracking.PLOT_OPTUNA_IMPORTANCES, tracking.PLOT_OPTUNA_PARALLEL,
        tracking.PLOT_OPTUNA_SLICE,
    }  # fmt: skip
    best_run = MlflowClient().get_run(parent.data.tags["best_run_id"])
    # The verdict, recomputed from the two runs' own test predictions.
    best_predictions = tracking.load_run_table(best_run.info.run_id, tracking.PREDICTIONS_FILE)
    if best_run.info.run_id == model5.info.run_id:
        expected = {"beats_model5": False, "p_value": 1.0}
        assert best_run.data.tags["beats_model5_reason"] == study_report.MODEL5_IS_BEST
        assert study_report.MODEL5_IS_BEST in capsys.readouterr().out  # the summary line says so in words
    else:
        model5_predictions = tracking.load_run_table(model5.info.run_id, tracking.PREDICTIONS_FILE)
        expected = study_report.compare_with_reference(best_predictions, model5_predictions)
    assert best_run.data.tags[tracking.BEATS_MODEL5_TAG] == str(expected["beats_model5"]).lower()
    assert parent.data.tags[tracking.BEATS_MODEL5_TAG] == best_run.data.tags[tracking.BEATS_MODEL5_TAG]
    assert best_run.data.metrics[tracking.MCNEMAR_MODEL5] == pytest.approx(expected["p_value"])
    # The kept model is the best trial's own: it scores the test patches as its run's predictions say.
    model = mlflow.pyfunc.load_model(f"runs:/{best_run.info.run_id}/{tracking.MODEL_ARTIFACT}")
    rows = best_predictions["index"].to_numpy()
    scored = serving.predict_batches(model, np.asarray(tiny.patches[rows]))
    np.testing.assert_allclose(scored, best_predictions["probability"], atol=1e-5)

    assert study_entry.main(argv) == 0  # the same storage and name: the study continues
    study = optuna.load_study(study_name=space.DEFAULT_STUDY_NAME, storage=storage)
    assert [trial.number for trial in study.trials] == [0, 1, 2, 3]
    assert [trial.number for trial in study.trials if trial.user_attrs.get(space.REFERENCE_ATTR)] == [0]
    assert len(_runs(**{tracking.STUDY_TAG: space.DEFAULT_STUDY_NAME, "mammo.entry": "study"})) == 2 + 4

    other_epochs = [*argv, "--epochs", "2"]  # would rank trials of unequal training together
    assert study_entry.main(other_epochs) == 2
    assert "epochs=1 (now 2)" in capsys.readouterr().err


class AlwaysPrune(optuna.pruners.BasePruner):
    """Prunes at the first report: makes the pruned path deterministic on tiny data."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


@pytest.mark.slow
def test_pruned_and_failed_trial_runs_end_killed_and_failed(tiny: PreparedDataset) -> None:
    from mammo.core.errors import ConfigError
    from mammo.search.study import StudySettings, TrialObjective, base_config, reference_params

    settings = StudySettings(epochs=2, verbose=0)
    base = base_config(settings, tiny)
    study = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
    study.enqueue_trial(reference_params(base))
    study.enqueue_trial({**reference_params(base), "blocks": 5})  # five blocks do not fit 48 pixels
    with tracking.start_run(run_name="parent") as parent:
        objective = TrialObjective(settings=settings, dataset=tiny, base=base, parent_run_id=parent.info.run_id)
        study.optimize(objective, n_trials=2, catch=(ConfigError,))
    assert [trial.state for trial in study.trials] == [TrialState.PRUNED, TrialState.FAIL]
    children = _runs(**{"mlflow.parentRunId": parent.info.run_id})
    pruned, failed = sorted(children, key=lambda run: run.data.tags[tracking.TRIAL_NUMBER_TAG])
    assert pruned.info.status == "KILLED" and pruned.data.tags[tracking.TRIAL_STATE_TAG] == "pruned"
    steps = [metric.step for metric in MlflowClient().get_metric_history(pruned.info.run_id, "val_auc")]
    assert steps == [1]  # pruned after its first epoch, which it keeps
    assert "test_accuracy" not in pruned.data.metrics
    assert failed.info.status == "FAILED" and failed.data.tags[tracking.TRIAL_STATE_TAG] == "failed"
    assert failed.data.tags[ERROR_TAG].startswith("ConfigError: ")  # the one-line reason, on the run
    traceback_text = mlflow.artifacts.load_text(f"runs:/{failed.info.run_id}/{TRACEBACK_FILE}")
    assert traceback_text.startswith("Traceback") and "ConfigError" in traceback_text


@pytest.mark.slow
def test_fail_running_trials_fails_a_dead_journal_workers_trial_and_ends_its_runs(
    tiny: PreparedDataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a worker killed mid-trial leaves on a journal (no heartbeats): a RUNNING trial and two RUNNING runs."""
    from mammo.search.study import RUN_ID_ATTR, WORKER_ATTR, StudySettings, base_config, reference_params

    journal = str(tmp_path / "s.journal")
    base = base_config(StudySettings(epochs=1), tiny)
    study = space.load_study(
        study_name=space.DEFAULT_STUDY_NAME, storage=space.open_storage(journal), metric="val_auc",
        reference_params=reference_params(base), attrs={"epochs": 1, "image_size": TINY_SIZE, "data_digest": tiny.digest,
                                                        "schedule": "quick", "seed": 0},
    )  # fmt: skip
    dead = study.ask()  # the enqueued Model 5 trial, now RUNNING
    space.suggest_params(dead, image_size=TINY_SIZE)
    parent = MlflowClient().create_run(tracking.use_experiment(), run_name=PARENT_NAME)
    child = MlflowClient().create_run(
        parent.info.experiment_id, tags={"mlflow.parentRunId": parent.info.run_id, tracking.STUDY_TAG: "x"}
    )
    dead.set_user_attr(RUN_ID_ATTR, child.info.run_id)
    dead.set_user_attr(WORKER_ATTR, "elsewhere:4242")

    assert study_entry.main(["--storage", journal, "--fail-running-trials"]) == 0
    assert "failed and re-queued running trials [0]" in capsys.readouterr().out
    trials = optuna.load_study(study_name=space.DEFAULT_STUDY_NAME, storage=space.open_storage(journal)).trials
    assert [trial.state for trial in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[1].params == trials[0].params  # the same point, queued for the next worker
    for run_id in (child.info.run_id, parent.info.run_id):
        run = MlflowClient().get_run(run_id)
        assert (
            run.info.status == "FAILED" and "worker elsewhere:4242 stopped during trial 0" in run.data.tags[ERROR_TAG]
        )

    argv = ["--data", str(tiny.path), "--storage", journal, "--max-trials", "1", "--best-model", "skip", *FAST]
    assert study_entry.main(argv) == 0  # the retry is the one trial the budget still needs
    trials = optuna.load_study(study_name=space.DEFAULT_STUDY_NAME, storage=space.open_storage(journal)).trials
    assert [trial.state for trial in trials] == [TrialState.FAIL, TrialState.COMPLETE]


def _worker(argv: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/mlflow.db"}
    return subprocess.Popen(
        [sys.executable, "-m", "entrypoints.study", *argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


@pytest.mark.slow
def test_two_processes_share_one_journal_study(tiny: PreparedDataset, tmp_path: Path) -> None:
    journal = tmp_path / "s.journal"
    # One trial each keeps the test fast; tests/test_search.py interleaves 2 × 4 trials on a journal.
    argv = ["--data", str(tiny.path), "--storage", str(journal), "--n-trials", "1", "--best-model", "skip", *FAST]
    tracking.use_experiment()  # create the MLflow tables and experiment once, not racing in both workers
    workers = [_worker(argv, tmp_path) for _ in range(2)]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], "\n".join(outputs)[-3000:]
    study = optuna.load_study(study_name=space.DEFAULT_STUDY_NAME, storage=space.open_storage(str(journal)))
    assert sorted(trial.number for trial in study.trials) == [0, 1]
    assert all(trial.state in (TrialState.COMPLETE, TrialState.PRUNED) for trial in study.trials)
    parents = _runs(**{"mlflow.runName": PARENT_NAME})
    assert len(parents) == 2  # one parent run per process, each with its own trial run
    children = [_runs(**{"mlflow.parentRunId": parent.info.run_id}) for parent in parents]
    assert sorted(run.data.tags[tracking.TRIAL_NUMBER_TAG] for (run,) in children) == ["0", "1"]
