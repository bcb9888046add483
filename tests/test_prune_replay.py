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


def _pruned_by_optuna(pruner: optuna.pruners.BasePruner, trials: list[dict]) -> dict[int, int]:
    """{trial number: the step it was pruned at} in a real Optuna study fed the same curves."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    pruned_at = {}
    for trial_row in trials:
        trial = study.ask()
        for step, value in enumerate(trial_row["intermediate"]):
            trial.report(value, step)
            if trial.should_prune():
                pruned_at[trial_row["number"]] = step
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, trial_row["value"])
    return pruned_at


def test_the_replay_prunes_as_optunas_percentile_pruner_does() -> None:
    """Same trials, same rule: the replay's pruned trials and their steps match a real Optuna study's."""
    pruned_at = _pruned_by_optuna(optuna.pruners.PercentilePruner(50.0, n_startup_trials=2, n_warmup_steps=1), TRIALS)
    assert pruned_at == {2: 1}  # the late starter is cut after its second epoch

    outcome = replay(TRIALS, percentile=50, startup=2, warmup=1)
    assert outcome["pruned"] == len(pruned_at)
    assert outcome["best"] == pytest.approx(0.92)  # the late starter's 0.95 is lost
    assert outcome["seconds"] == pytest.approx(13.0 * 3 + 3.0 + 2 * 1.0)  # pruned: set-up + the 2 epochs it ran


def test_a_gentler_setting_keeps_the_late_starter() -> None:
    outcome = replay(TRIALS, percentile=50, startup=3, warmup=1)
    assert outcome["pruned"] == 0 and outcome["best"] == pytest.approx(0.95)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # PatientPruner is experimental
def test_the_patient_replay_prunes_as_optunas_patient_pruner_does() -> None:
    """Wrapped in PatientPruner, a trial still improving is spared; one that stalls below the bar is cut."""
    stalling = _trial(4, [0.3, 0.35, 0.34, 0.33, 0.32])  # below every other curve, no better after epoch 2
    curves = [*TRIALS[:2], _trial(2, [0.4, 0.5, 0.6, 0.95, 0.96]), stalling]
    curves[:2] = [_trial(row["number"], [*row["intermediate"], row["value"]]) for row in curves[:2]]
    percentile = optuna.pruners.PercentilePruner(50.0, n_startup_trials=2, n_warmup_steps=1)
    pruned_at = _pruned_by_optuna(optuna.pruners.PatientPruner(percentile, patience=1), curves)
    assert pruned_at == {4: 3}  # the late starter survives; the stalling trial goes once 2 epochs show no gain
    outcome = replay(curves, percentile=50, startup=2, warmup=1, patience=1)
    assert outcome["pruned"] == 1 and outcome["best"] == pytest.approx(0.96)
    assert outcome["seconds"] == pytest.approx(13.0 * 3 + 3.0 + 4 * 1.0)  # the stalling trial ran 4 epochs
    assert replay(curves, percentile=50, startup=2, warmup=1)["best"] == pytest.approx(0.9)  # unwrapped: cut
