"""Three `study` workers on one PostgreSQL study, logging to the authenticated server; one is killed -9 mid-trial.

The storage URL carries no password (PGPASSWORD, as docs/team.md says). Heartbeats every second,
stale after GRACE_PERIOD: a surviving worker fails the dead trial, re-queues it (its retry runs
the same point) and ends the dead trial's run and the dead worker's parent run FAILED. The study
ends with exactly --max-trials complete + pruned trials, distinct numbers, one MLflow run per trial
and no run left RUNNING. The counts are printed (pytest -s shows them; CI logs keep them).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import mlflow
import optuna
import pytest
from mlflow import MlflowClient
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from mammo import tracking
from mammo.search import space
from mammo.search.study import ERROR_TAG, RUN_ID_ATTR, WORKER_ATTR
from tests.team.conftest import TRAINER, Postgres, TeamServer, stop_process_group
from tests.test_study_entry import FAST, REPO_ROOT, write_tiny_dataset

MAX_TRIALS = 5
HEARTBEAT_INTERVAL = 1
GRACE_PERIOD = 8  # eight missed heartbeats: slack for heartbeat threads on a busy 2-core machine
EXPERIMENT = "mammo-killed-worker"
WAIT_S = 600

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]


def _running_trial(study: optuna.Study, pids: set[int]) -> optuna.trial.FrozenTrial | None:
    """A trial one of our workers is training now (its MLflow run exists, so it is mid-trial)."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR, "")
        pid = worker.rpartition(":")[2]
        if trial.user_attrs.get(RUN_ID_ATTR) and pid.isdigit() and int(pid) in pids:
            return trial
    return None


def test_a_worker_killed_mid_trial_is_retried_and_its_runs_end_failed(
    postgres: Postgres, team_server: TeamServer, as_user, tmp_path: Path
) -> None:
    dataset = write_tiny_dataset(tmp_path / "tiny")
    storage = postgres.url_for("mammo_test")  # no password in the URL: PGPASSWORD below
    name = f"killed-worker-{uuid.uuid4().hex[:8]}"
    as_user(TRAINER)
    tracking.use_experiment(EXPERIMENT)  # created once, not raced by three workers
    argv = [
        "--data", str(dataset.path), "--storage", storage, "--study-name", name, "--max-trials", str(MAX_TRIALS),
        "--heartbeat-interval", str(HEARTBEAT_INTERVAL), "--grace-period", str(GRACE_PERIOD), "--best-model", "skip",
        "--experiment", EXPERIMENT, "--pruner", "none", *FAST,
    ]  # fmt: skip
    env = {**os.environ, **team_server.env(TRAINER), "PGPASSWORD": postgres.password, "PYTHONPATH": str(REPO_ROOT)}
    logs = [tmp_path / f"worker{index}.log" for index in range(3)]
    workers = []
    for log in logs:
        with log.open("wb") as output:
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "entrypoints.study", *argv], cwd=tmp_path, env=env, stdout=output,
                stderr=subprocess.STDOUT, start_new_session=True,
            ))  # fmt: skip
    env_storage = space.open_storage(space.rdb_url(postgres.url_for("mammo_test", with_password=True)))
    try:
        deadline = time.monotonic() + WAIT_S
        victim = None
        while victim is None:
            assert time.monotonic() < deadline, "no worker started a trial:\n" + logs[0].read_text()[-3000:]
            assert all(worker.poll() is None for worker in workers), "\n".join(log.read_text()[-2000:] for log in logs)
            with contextlib.suppress(KeyError):  # the study may not exist yet
                study = optuna.load_study(study_name=name, storage=env_storage)
                victim = _running_trial(study, {worker.pid for worker in workers})
            time.sleep(0.3)
        killed = next(worker for worker in workers if worker.pid == int(victim.user_attrs[WORKER_ATTR].split(":")[-1]))
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
        assert study._storage.get_trial(victim._trial_id).state == TrialState.RUNNING  # killed mid-trial
        survivors = [worker for worker in workers if worker is not killed]
        for worker in survivors:
            worker.wait(timeout=max(1.0, deadline - time.monotonic()))
        outputs = "\n".join(log.read_text()[-2500:] for log in logs)
        assert [worker.returncode for worker in survivors] == [0, 0], outputs
    finally:
        for worker in workers:
            stop_process_group(worker)

    trials = optuna.load_study(study_name=name, storage=env_storage).trials
    finished = [trial for trial in trials if trial.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    failed = [trial for trial in trials if trial.state == TrialState.FAIL]
    retries = [trial for trial in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(trial) is not None]
    print(
        f"\nkilled worker: requested {MAX_TRIALS} / finished {len(finished)} / retried {len(retries)} / "
        f"failed {len(failed)} (trial {victim.number} killed, {len(trials)} trials in all)"
    )
    assert len(finished) == MAX_TRIALS and len(trials) == MAX_TRIALS + 1
    assert sorted(trial.number for trial in trials) == list(range(len(trials)))
    assert [trial.number for trial in failed] == [victim.number]
    (retry,) = retries
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == victim.number
    # The retry runs the dead trial's point: whatever it had drawn before the kill, the rest drawn anew.
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED) and failed[0].params.items() <= retry.params.items()

    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    runs = MlflowClient().search_runs([experiment.experiment_id], f"tags.`{tracking.STUDY_TAG}` = '{name}'")
    trial_runs = [run for run in runs if tracking.TRIAL_NUMBER_TAG in run.data.tags]
    numbers = sorted(int(run.data.tags[tracking.TRIAL_NUMBER_TAG]) for run in trial_runs)
    assert numbers == list(range(len(trials)))  # every trial exactly one run, the killed one included
    assert not [run.info.run_name for run in runs if run.info.status == "RUNNING"]
    dead_run = MlflowClient().get_run(victim.user_attrs[RUN_ID_ATTR])
    assert dead_run.info.status == "FAILED" and dead_run.data.tags[tracking.TRIAL_STATE_TAG] == "failed"
    assert f"stopped during trial {victim.number}" in dead_run.data.tags[ERROR_TAG]
    parents = [run for run in runs if tracking.TRIAL_NUMBER_TAG not in run.data.tags]
    assert sorted(run.info.status for run in parents) == ["FAILED", "FINISHED", "FINISHED"]
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=name, storage=env_storage)
