"""Pruner settings replayed on a study without pruning: what each would have saved and which best it keeps.

Reads the trials of a `none` study recorded by `bench.study` (each trial's per-epoch val_auc, as
reported to Optuna, its seconds and set-up/epoch timing) and replays Optuna's percentile rule on them
in trial order: from the `startup`-th complete trial on, a trial is pruned at step s >= `warmup` when
its best value so far is below the `percentile`-th percentile of the complete trials' values at s
(`MedianPruner` is percentile 50; only COMPLETE trials count, as in Optuna). A pruned trial costs its
set-up plus the epochs it ran. Prints, per setting, the ratio of trials/hour to the unpruned study and
the best value left; last, the best ratio of a setting that keeps the unpruned study's best value.
`--patience K` replays each setting wrapped in Optuna's `PatientPruner(..., patience=K)`: a trial is
pruned only when, besides the percentile rule, its best of the last K + 1 epochs is below its best
before them (a trial still improving is never cut).

It is a replay, not a study: a real pruned study's sampler also learns from the pruned trials, so
its later trials differ (the replay of the default setting, median with warmup 2, gives 2.09× where the
measured 30 × 10 study gave 2.01×, with the same best 0.9501). Usage:

    python -m bench.prune_replay docs/bench/cpu_study_none_30x10.json [--patience 1]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

PERCENTILES = (50, 40, 33, 25)
STARTUPS = (2, 3, 4, 5)
WARMUPS = (0, 1, 2, 3)


def unpruned_trials(results: dict) -> list[dict]:
    """The `none` study's trials from `bench.study --out` JSON (or one study's own figures)."""
    study = results["studies"]["none"][0] if "studies" in results else results
    trials = study["trials"]
    if any(not trial.get("intermediate") for trial in trials) or any(trial["state"] != "COMPLETE" for trial in trials):
        raise SystemExit("every trial must be complete with its per-epoch values: replay a `none` study")
    return trials


def stalled(curve: list[float], step: int, patience: int | None) -> bool:
    """Optuna's PatientPruner test at `step` (min_delta 0): no better value in the last patience + 1 steps."""
    if patience is None:
        return True
    if step <= patience:
        return False
    return max(curve[: step - patience]) > max(curve[step - patience : step + 1])


def replay(trials: list[dict], *, percentile: float, startup: int, warmup: int, patience: int | None = None) -> dict:
    complete: list[list[float]] = []
    seconds, best, pruned = 0.0, float("-inf"), 0
    for trial in trials:
        curve = trial["intermediate"]
        cut = next(
            (
                step
                for step in range(warmup, len(curve))
                if len(complete) >= startup
                and stalled(curve, step, patience)
                and max(curve[: step + 1]) < np.percentile([other[step] for other in complete], percentile)
            ),
            None,
        )
        if cut is None:
            complete.append(curve)
            seconds += trial["seconds"]
            best = max(best, trial["value"])
        else:
            pruned += 1
            seconds += trial["setup_seconds"] + (cut + 1) * trial["epoch_seconds"]
    return {"seconds": seconds, "best": best, "pruned": pruned}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="JSON written by `python -m bench.study --out` (its none study)")
    parser.add_argument("--patience", type=int, help="wrap every setting in Optuna's PatientPruner with this patience")
    args = parser.parse_args(argv)
    trials = unpruned_trials(json.loads(args.results.read_text()))
    total, target = sum(trial["seconds"] for trial in trials), max(trial["value"] for trial in trials)
    print(f"none: {len(trials)} trials in {total:.0f} s, best {target:.4f}")
    keeping = []
    for percentile, startup, warmup in itertools.product(PERCENTILES, STARTUPS, WARMUPS):
        outcome = replay(trials, percentile=percentile, startup=startup, warmup=warmup, patience=args.patience)
        ratio = total / outcome["seconds"]
        patient = "" if args.patience is None else f" patience {args.patience}"
        print(
            f"percentile {percentile} startup {startup} warmup {warmup}{patient}: {ratio:.2f}x, "
            f"{outcome['pruned']} pruned, best {outcome['best']:.4f}"
        )
        if outcome["best"] >= target:
            keeping.append(ratio)
    print(f"best ratio of a setting that keeps the best value: {max(keeping, default=1.0):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
