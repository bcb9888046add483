"""Several `study` workers on one Optuna study: a study-wide trial budget, and the trials of dead workers.

Optuna only (`mammo.search.study` passes the hook that ends a dead trial's MLflow run).

The budget (`--max-trials`) counts complete + pruned trials over the whole study, as Optuna's
`MaxTrialsCallback(n, states=(COMPLETE, PRUNED))` does. That callback runs only after a worker's
trial has ended, so N workers that all see "one left" start N trials and overshoot by up to N-1.
Here a worker claims a trial only while complete + pruned + running < budget, and it checks and
claims (Optuna's `ask`) under a study-wide lock, so the study ends with exactly the budget:

    PostgreSQL      a session advisory lock (released by the server if the worker dies)
    journal, SQLite an exclusive file lock (`filelock`) on `<file>.budget.lock` beside the storage file (one machine)
    other RDBs      no lock: like MaxTrialsCallback, workers that finish together may overshoot

A worker whose remaining budget is all held by running trials waits, polling. With heartbeats (RDB
storages) a running trial whose worker died is failed after the grace period and re-queued with
the same parameters (`StaleTrialCallback`), and a waiting worker runs the retry, so the budget is
met whichever worker dies. The journal storage has no heartbeats: a dead worker's trial stays
RUNNING until `fail_running_trials` (the study's `--fail-running-trials`) fails and re-queues it,
so there workers stop once the budget is complete or held by running trials instead of waiting.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import filelock
import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from mammo.core.compat import heartbeat_enabled, study_storage, trial_id

BUDGET_STATES = (TrialState.COMPLETE, TrialState.PRUNED)  # what --max-trials counts (as MaxTrialsCallback)
LOCK_SUFFIX = ".budget.lock"


class StaleTrialCallback(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry (a WAITING copy of the dead trial, same parameters), then `on_stale(trial)`.

    `on_stale` lets the caller clean up what the dead worker left open outside Optuna (its MLflow
    runs). It is called once per failed trial, by the one process that failed it.
    """

    def __init__(self, *, max_retry: int | None, on_stale: Callable[[FrozenTrial], None] | None = None) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # "experimental" since Optuna 2.8
            super().__init__(max_retry=max_retry)
        self.on_stale = on_stale

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        super().__call__(study, trial)
        if self.on_stale is not None:
            self.on_stale(trial)


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's own check (RDB storages with heartbeats; a no-op elsewhere)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def fail_running_trials(study: optuna.Study, *, callback: StaleTrialCallback) -> list[int]:
    """Fail every RUNNING trial and hand it to `callback` (re-queue, clean up); the failed trial numbers.

    For storages without heartbeats (the journal file), where a killed worker's trial stays RUNNING
    forever. Only safe when no worker is running: a live worker's trial would be failed under it.
    """
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        try:
            if not study_storage(study).set_trial_state_values(trial_id(trial), state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:  # it ended meanwhile
            continue
        callback(study, study_storage(study).get_trial(trial_id(trial)))
        failed.append(trial.number)
    return failed


def budget_counts(study: optuna.Study) -> tuple[int, int]:
    """(complete + pruned, running) over the whole study."""
    states = [trial.state for trial in study.get_trials(deepcopy=False)]
    return sum(state in BUDGET_STATES for state in states), states.count(TrialState.RUNNING)


class _NoLock:
    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


class _FileLock(_NoLock):
    """An exclusive file lock (flock on POSIX, msvcrt on Windows): the OS drops it when the process dies."""

    def __init__(self, path: Path) -> None:
        self._lock = filelock.FileLock(path)

    def acquire(self) -> None:
        self._lock.acquire()

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()

    def close(self) -> None:
        self.release()


class _AdvisoryLock(_NoLock):
    """A PostgreSQL session advisory lock on its own connection: the server drops it when the worker dies."""

    def __init__(self, url: str, key: str) -> None:
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        self._engine = sqlalchemy.create_engine(url, poolclass=NullPool)
        self._connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self._key = key
        self._held = False

    def _call(self, function: str) -> None:
        import sqlalchemy

        self._connection.execute(sqlalchemy.text(f"SELECT {function}(hashtext(:key))"), {"key": self._key})

    def acquire(self) -> None:
        self._call("pg_advisory_lock")
        self._held = True

    def release(self) -> None:
        if self._held:
            self._call("pg_advisory_unlock")
            self._held = False

    def close(self) -> None:
        self.release()
        self._connection.close()
        self._engine.dispose()


@contextlib.contextmanager
def budget_lock(*, storage_path: Path | None, rdb_url: str | None, study_name: str) -> Iterator[_NoLock]:
    """The study-wide lock for the storage: a file beside `storage_path`, or PostgreSQL's advisory lock."""
    if storage_path is not None:
        lock: _NoLock = _FileLock(storage_path.with_name(storage_path.name + LOCK_SUFFIX))
    elif rdb_url is not None and rdb_url.startswith("postgresql"):
        lock = _AdvisoryLock(rdb_url, f"mammo-budget:{study_name}")
    else:
        lock = _NoLock()
    try:
        yield lock
    finally:
        lock.close()


def optimize_within_budget(
    study: optuna.Study, objective: Callable[[optuna.Trial], float], *, max_trials: int, lock: _NoLock,
    n_trials: int | None = None, timeout: float | None = None, catch: Sequence[type[Exception]] = (),
    poll_seconds: float = 5.0,
) -> int:  # fmt: skip
    """Run trials until the study holds `max_trials` complete + pruned ones; the number this worker ran.

    `n_trials` and `timeout` still bound this worker. The budget is checked and the next trial
    claimed under `lock`, released as soon as the objective starts (Optuna's ask has then made the
    trial RUNNING, so every other worker counts it).
    """
    started = time.monotonic()
    ran = 0
    waits = heartbeat_enabled(study)  # running trials end, or go stale and are retried

    def claimed(trial: optuna.Trial) -> Any:
        lock.release()
        return objective(trial)

    while n_trials is None or ran < n_trials:
        if timeout is not None and time.monotonic() - started >= timeout:
            break
        lock.acquire()
        try:
            fail_stale_trials(study)
            finished, running = budget_counts(study)
            if finished >= max_trials:
                break
            if finished + running < max_trials:
                # One trial per call; fail_stale_trials and ask run inside, still under the lock.
                study.optimize(claimed, n_trials=1, catch=tuple(catch), gc_after_trial=True)
                ran += 1
                continue
        finally:
            lock.release()
        if not waits:
            break  # the rest of the budget is held by running trials, and no heartbeat tells if one died
        time.sleep(poll_seconds)
    return ran
