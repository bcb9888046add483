"""The distributed study on a real PostgreSQL server: two workers share it, a stale trial is retried.

Start the server with `.ci/postgres.sh` (installs PostgreSQL if needed, creates role and database
mammo/mammo_test); point elsewhere with MAMMO_POSTGRES_URL. Without a reachable server the test
is skipped, except under CI (the CI variable set), where a missing server is a failure.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from mammo import search, tracking
from mammo.data.store import PreparedDataset
from mammo.study import StudySettings, base_config, reference_params
from tests.test_study_entry import FAST, _worker, write_tiny_dataset

DEFAULT_URL = "postgresql://mammo:mammo@127.0.0.1:5432/mammo_test"
HEARTBEAT_INTERVAL = 1
GRACE_PERIOD = 5  # four missed heartbeats: slack for workers' heartbeat threads on a busy 2-core machine


def _in_ci() -> bool:
    """CI (or MAMMO_REQUIRE_SERVERS=1, which .ci/run sets) makes a missing server a failure."""
    flags = (os.environ.get(name, "").strip().lower() for name in ("CI", "MAMMO_REQUIRE_SERVERS"))
    return any(flag not in ("", "0", "false", "no") for flag in flags)


@pytest.fixture(scope="module")
def postgres_url() -> str:
    url = os.environ.get("MAMMO_POSTGRES_URL", DEFAULT_URL)
    try:
        engine = sqlalchemy.create_engine(search.rdb_url(url), connect_args={"connect_timeout": 5})
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
    except Exception as error:  # any driver or connection error means "no server here"
        message = (
            f"PostgreSQL not reachable at {search.describe_storage(url)} ({type(error).__name__}: "
            f"{str(error).strip().splitlines()[0]}); start it with .ci/postgres.sh or set MAMMO_POSTGRES_URL."
        )
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def study_name(postgres_url: str) -> Iterator[str]:
    name = f"mammo-test-{uuid.uuid4().hex[:8]}"
    yield name
    with contextlib.suppress(KeyError):  # the test may have failed before creating it
        optuna.delete_study(study_name=name, storage=search.open_storage(postgres_url))


def _stale_model5_trial(url: str, name: str, dataset: PreparedDataset) -> int:
    """Create the study with Model 5 enqueued, start that trial, beat once and 'die' (stop beating)."""
    storage = search.open_storage(url, heartbeat_interval=HEARTBEAT_INTERVAL, grace_period=GRACE_PERIOD)
    base = base_config(StudySettings(epochs=1), dataset)
    model5 = reference_params(base)
    study = search.load_study(study_name=name, storage=storage, metric="val_auc", reference_params=model5)
    trial = study.ask()  # pops the enqueued Model 5 trial: RUNNING
    search.suggest_params(trial, image_size=base.image_size)
    storage.record_heartbeat(trial._trial_id)  # a worker's first heartbeat, then nothing
    return trial.number


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_two_workers_share_a_postgres_study_and_retry_a_stale_trial(
    postgres_url: str, study_name: str, tmp_path: Path
) -> None:
    dataset = write_tiny_dataset(tmp_path / "tiny")
    stale_number = _stale_model5_trial(postgres_url, study_name, dataset)
    time.sleep(GRACE_PERIOD + 0.5)  # the stale trial's last heartbeat is now older than the grace period
    tracking.use_experiment()  # MLflow tables and experiment once, not racing in both workers
    argv = [
        "--data", str(dataset.path), "--storage", postgres_url, "--study-name", study_name, "--n-trials", "1",
        "--heartbeat-interval", str(HEARTBEAT_INTERVAL), "--grace-period", str(GRACE_PERIOD), "--best-model", "skip",
        *FAST,
    ]  # fmt: skip
    workers = [_worker(argv, tmp_path) for _ in range(2)]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], "\n".join(outputs)[-3000:]

    study = optuna.load_study(study_name=study_name, storage=search.open_storage(postgres_url))
    trials = study.trials
    assert sorted(trial.number for trial in trials) == list(range(3))  # the stale trial + 2 workers × 1
    assert trials[stale_number].state == TrialState.FAIL
    retried_from = RetryHeartbeatStaleTrialCallback.retried_trial_number
    retries = [trial for trial in trials if retried_from(trial) == stale_number]
    assert len(retries) == 1
    (retry,) = retries
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retry.params == trials[stale_number].params  # the same Model 5 point, trained again
    assert retry.user_attrs[search.REFERENCE_ATTR] == search.REFERENCE_VALUE
    others = [trial for trial in trials if trial.number not in (stale_number, retry.number)]
    assert all(trial.state in (TrialState.COMPLETE, TrialState.PRUNED) for trial in others)
    assert search.trial_counts(study)["trials_failed"] == 1
