"""The MLflow side of a trial that did not end well: its failure on record, a dead worker's runs ended.

A failed trial's run carries the error's first line (`mammo.error` tag) and its traceback
(`errors/traceback.txt`). When a worker dies mid-trial, the process that fails its trial (a
surviving worker on a heartbeat storage, or `--fail-running-trials` on a journal) ends the dead
trial's run and the dead worker's parent run FAILED, saying who died and who noticed.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from mammo import tracking
from mammo.core.errors import MammoError

RUN_ID_ATTR = "mlflow_run_id"  # trial user attr: the trial's MLflow run
MODEL_ATTR = "model_logged"  # trial user attr: the run holds the trial's model
WORKER_ATTR = "worker"  # trial user attr: host:pid of the process running it (also the run tag below)
WORKER_TAG = "mammo.worker"
ERROR_TAG, TRACEBACK_FILE = tracking.ERROR_TAG, tracking.TRACEBACK_FILE
failure_line, record_failure = tracking.failure_line, tracking.record_failure  # a failed trial's run: any run's record


def worker_name() -> str:
    """host:pid, so a trial or run can be traced to the process (and machine) that ran it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def end_dead_trial_runs(trial: Any) -> None:
    """End a dead worker's trial run (and its parent run) FAILED, saying who died and who noticed.

    Runs that already ended (e.g. a retry's inherited run id, which names its predecessor's run)
    are left alone. Our own trial gone stale (a long stall) leaves our parent run going. Best
    effort: a tracking-server error is reported and the study goes on.
    """
    run_id = trial.user_attrs.get(RUN_ID_ATTR)
    if not run_id:
        return
    dead = trial.user_attrs.get(WORKER_ATTR, "its worker")
    reason = f"worker {dead} stopped during trial {trial.number}; failed by {worker_name()}"
    try:
        parent_id = tracking.fail_if_running(run_id, tags={tracking.TRIAL_STATE_TAG: "failed", ERROR_TAG: reason})
        if parent_id and dead != worker_name():
            tracking.fail_if_running(parent_id, tags={ERROR_TAG: reason})
    except MammoError as error:
        print(f"study: warning: could not end run {run_id} of dead trial {trial.number}: {error}", file=sys.stderr)
