"""bench.prune_replay: Optuna's percentile rule replayed on recorded curves (the figures docs/performance.md quotes)."""

from __future__ import annotations

import optuna
import pytest

from bench.prune_replay import replay


def _trial(number: int, curve: list[float], *, seconds: float = 13.0) -> dict:
    return {
        "number": number, "state": "COMPLETE", "value": curve[-1], "intermediate": curve, "seconds": seconds,
        "setup_seconds": 3.0, "epoch_seconds": 1.0,
    }  # fmt: skip


TRIALS = [
    _trial(0, [0.6, 0.7, 0.8, 0.9]),
    _trial(1, [0.5, 0.6, 0.7, 0.8]),
    _trial(2, [0.4, 0.5, 0.6, 0.95]),  # a late starter: the best, below the others early on
    _trial(3, [0.7, 0.8, 0.85, 0.92]),
]


def test_the_replay_prunes_as_optunas_percentile_pruner_does() -> None:
    """Same trials, same rule: the replay's pruned trials and their steps match a real Optuna study's."""
    pruner = optuna.pruners.PercentilePruner(50.0, n_startup_trials=2, n_warmup_steps=1)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    pruned_at = {}
    for trial_row in TRIALS:
        trial = study.ask()
        for step, value in enumerate(trial_row["intermediate"]):
            trial.report(value, step)
            if trial.should_prune():
                pruned_at[trial_row["number"]] = step
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, trial_row["value"])
    assert pruned_at == {2: 1}  # the late starter is cut after its second epoch

    outcome = replay(TRIALS, percentile=50, startup=2, warmup=1)
    assert outcome["pruned"] == len(pruned_at)
    assert outcome["best"] == pytest.approx(0.92)  # the late starter's 0.95 is lost
    assert outcome["seconds"] == pytest.approx(13.0 * 3 + 3.0 + 2 * 1.0)  # pruned: set-up + the 2 epochs it ran


def test_a_gentler_setting_keeps_the_late_starter() -> None:
    outcome = replay(TRIALS, percentile=50, startup=3, warmup=1)
    assert outcome["pruned"] == 0 and outcome["best"] == pytest.approx(0.95)
