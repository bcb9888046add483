"""The study-wide trial budget with pure-Python objectives: N processes finish exactly --max-trials.

With trials this fast, Optuna's MaxTrialsCallback alone (checked after each trial) ends this
3-worker study at 15 trials, not 13: workers that finish together each start one more. Counting
running trials before claiming one, under the budget lock, makes it exact.
"""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from mammo.search import space, workers
from tests.conftest import run_spawned
from tests.test_search import MODEL5_POINT, quadratic

BUDGET = 13


def _pruning_objective(trial: optuna.Trial) -> float:
    """Every third trial pruned (pruned trials count towards the budget too)."""
    value = quadratic(trial)
    time.sleep(0.01)
    if trial.number % 3 == 2:
        raise optuna.TrialPruned
    return value


def _budget_worker(path: str) -> None:
    study = space.load_study(
        study_name="budget", storage=space.open_storage(path), metric="val_auc",
        sampler=space.make_sampler("random", seed=0), reference_params=MODEL5_POINT,
    )  # fmt: skip
    with workers.budget_lock(storage_path=Path(path), rdb_url=None, study_name="budget") as lock:
        workers.optimize_within_budget(study, _pruning_objective, max_trials=BUDGET, lock=lock)


@pytest.mark.slow
def test_three_processes_finish_exactly_the_budget_on_a_journal(tmp_path: Path) -> None:
    path = str(tmp_path / "optuna.journal")
    run_spawned(_budget_worker, (path,), count=3, timeout=180)
    study = optuna.load_study(study_name="budget", storage=space.open_storage(path))
    states = [trial.state for trial in study.trials]
    assert len(states) == BUDGET and set(states) == {TrialState.COMPLETE, TrialState.PRUNED}
    assert sorted(trial.number for trial in study.trials) == list(range(BUDGET))


@pytest.mark.slow
def test_budget_counts_what_is_already_there_and_n_trials_still_caps_a_worker(tmp_path: Path) -> None:
    storage = space.open_storage(f"sqlite:///{tmp_path}/optuna.db")
    study = optuna.create_study(storage=storage, direction="maximize")
    study.optimize(quadratic, n_trials=2)
    lock = workers._NoLock()
    assert workers.optimize_within_budget(study, quadratic, max_trials=5, lock=lock, n_trials=1) == 1
    assert workers.optimize_within_budget(study, quadratic, max_trials=5, lock=lock) == 2
    assert workers.optimize_within_budget(study, quadratic, max_trials=5, lock=lock) == 0
    assert workers.budget_counts(study) == (5, 0)


@pytest.mark.slow
def test_failed_trials_do_not_use_the_budget_and_bugs_propagate(tmp_path: Path) -> None:
    from mammo.core.errors import TrialError

    study = optuna.create_study(direction="maximize")

    def flaky(trial: optuna.Trial) -> float:
        if trial.number == 1:
            raise TrialError("an expected failure: the study goes on")
        return quadratic(trial)

    workers.optimize_within_budget(study, flaky, max_trials=3, lock=workers._NoLock(), catch=(TrialError,))
    assert [trial.state for trial in study.trials].count(TrialState.COMPLETE) == 3
    assert study.trials[1].state == TrialState.FAIL

    def buggy(trial: optuna.Trial) -> float:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        workers.optimize_within_budget(study, buggy, max_trials=5, lock=workers._NoLock(), catch=(TrialError,))
