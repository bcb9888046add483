"""Search speed: trials per hour of `run_study` with the median pruner against none, same seed, trials and epochs.

Each study runs in a fresh process (as `study` does), with its own Optuna SQLite storage and MLflow
SQLite store in a temporary folder, on the same prepared dataset (default: the synthetic one at a
smaller `--image-size`, 48 by default, so a study takes minutes on 2 cores). Pruner and no pruner alternate when
there are several rounds. Per study it prints trials/hour (`run_study`'s own measure: trials over the
optimisation's seconds), how many trials were pruned and at which epoch, the best value, and where a
trial's time goes (from its MLflow run: set-up before the first epoch, seconds per epoch, and the
evaluation and logging after the last). Prints the ratio of trials/hour, pruner/none, last (goal ≥ 2
at an equal or better best value); `--pruner hyperband` sets Optuna's Hyperband against none instead. Usage:

    python -m bench.study [--trials 8] [--epochs 4] [--image-size 48] [--data DIR] [--rounds 1] [--out result.json]
    python -m bench.study --quick           # 3 trials × 2 epochs at 48 px: a smoke run
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import load_average, machine, save_results

REPO = Path(__file__).resolve().parents[1]
PRUNERS = ("none", "median", "hyperband")  # mammo.search.space.make_pruner's choices


def run_one(*, pruner: str, data: str, trials: int, epochs: int, image_size: int, seed: int, folder: Path) -> dict:
    """One study in this process (the child's side): its figures as a dict."""
    import mlflow

    from mammo.data.store import load_prepared
    from mammo.search import study

    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    settings = study.StudySettings(
        study_name=f"bench-{pruner}", storage=f"sqlite:///{folder / 'optuna.db'}", pruner=pruner, n_trials=trials,
        epochs=epochs, image_size=image_size, seed=seed, verbose=0,
    )  # fmt: skip
    started = time.perf_counter()
    outcome = study.run_study(settings, load_prepared(data), experiment="bench-study")
    wall = time.perf_counter() - started
    rows = [trial_row(trial) for trial in outcome.study.get_trials(deepcopy=False)]
    best = outcome.study.best_trial
    return {
        "pruner": pruner, "trials_run": outcome.trials_run, "optimize_seconds": round(outcome.seconds, 1),
        "run_study_seconds": round(wall, 1), "trials_per_hour": round(outcome.trials_run / outcome.seconds * 3600, 1),
        "pruned": sum(row["state"] == "PRUNED" for row in rows), "best_value": round(best.value, 4),
        "best_trial": best.number, "trials": rows,
    }  # fmt: skip


def trial_row(trial) -> dict:
    """A trial's state, value and timing, the timing split from its MLflow run's epoch timestamps."""
    import mlflow

    row = {
        "number": trial.number, "state": trial.state.name, "value": None if trial.value is None else round(trial.value, 4),
        "epochs_run": len(trial.intermediate_values), "seconds": round(trial.duration.total_seconds(), 1),
        "reference": trial.user_attrs.get("reference") == "model5", "model_logged": bool(trial.user_attrs.get("model_logged")),
        "intermediate": [round(trial.intermediate_values[step], 4) for step in sorted(trial.intermediate_values)],
        "params": trial.params,
    }  # fmt: skip
    run_id = trial.user_attrs.get("mlflow_run_id")
    if run_id:
        client = mlflow.MlflowClient()
        run = client.get_run(run_id)
        ends = sorted(metric.timestamp for metric in client.get_metric_history(run_id, "loss"))
        if ends and run.info.end_time:
            epoch = statistics.median(b - a for a, b in itertools.pairwise(ends)) / 1000 if len(ends) > 1 else None
            first = (ends[0] - run.info.start_time) / 1000
            row |= {
                "epoch_seconds": None if epoch is None else round(epoch, 2),
                "setup_seconds": None if epoch is None else round(first - epoch, 2),
                "after_last_epoch_seconds": round((run.info.end_time - ends[-1]) / 1000, 2),
            }
    return row


def child(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    figures = run_one(
        pruner=args.one, data=args.data, trials=args.trials, epochs=args.epochs, image_size=args.image_size,
        seed=args.seed, folder=folder,
    )  # fmt: skip
    (folder / "figures.json").write_text(json.dumps(figures))
    return 0


def run_in_process(pruner: str, args: argparse.Namespace, data: str, scratch: Path) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"{pruner}-", dir=scratch))
    command = [
        sys.executable, "-m", "bench.study", "--one", pruner, "--folder", str(folder), "--data", data,
        "--trials", str(args.trials), "--epochs", str(args.epochs), "--image-size", str(args.image_size),
        "--seed", str(args.seed),
    ]  # fmt: skip
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2", "MLFLOW_LOGGING_LEVEL": "WARNING"}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"study with pruner {pruner} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    figures = json.loads((folder / "figures.json").read_text())
    figures["process_seconds"] = round(time.perf_counter() - started, 1)
    return figures


def describe(figures: dict) -> str:
    trials = figures["trials"]
    pruned_at = sorted(row["epochs_run"] for row in trials if row["state"] == "PRUNED")
    complete = [row for row in trials if row["state"] == "COMPLETE"]

    def median_of(key: str, rows: list[dict]) -> str:
        values = [row[key] for row in rows if row.get(key) is not None]
        return f"{statistics.median(values):.1f}" if values else "-"

    return (
        f"{figures['pruner']:>6}: {figures['trials_per_hour']:.1f} trials/h ({figures['trials_run']} trials in "
        f"{figures['optimize_seconds']:.0f} s; process {figures['process_seconds']:.0f} s), {figures['pruned']} pruned "
        f"(after epochs {pruned_at or '-'}), best {figures['best_value']:.4f} (trial {figures['best_trial']}); "
        f"per trial: {median_of('setup_seconds', trials)} s set-up, {median_of('epoch_seconds', trials)} s/epoch, "
        f"{median_of('after_last_epoch_seconds', complete)} s after the last epoch of a complete trial "
        f"(reference trial {next((row['seconds'] for row in trials if row['reference']), '-')} s, "
        f"{sum(row['model_logged'] for row in trials)} trials logged figures and a model)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument(
        "--image-size",
        type=int,
        default=48,
        help="train at this size (the data are resized; 48: "
        "the smallest model5's four blocks take, a default study pair in ~12 min on 2 cores)",
    )
    parser.add_argument("--data", help="prepared dataset (default: the synthetic one, prepared on first use)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1, help="studies per pruner, alternating which goes first")
    parser.add_argument("--pruner", choices=PRUNERS[1:], default="median", help="the pruner set against none")
    parser.add_argument("--quick", action="store_true", help="3 trials × 2 epochs at 48 px, one round")
    parser.add_argument("--out", help="write the figures as JSON here too")
    parser.add_argument("--one", choices=PRUNERS, help=argparse.SUPPRESS)  # internal: run one study in this process
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        return child(args)
    if args.quick:
        args.trials, args.epochs, args.image_size, args.rounds = 3, 2, 48, 1
    from mammo.data.prepare import ensure_prepared

    data = str(Path(args.data or ensure_prepared("synthetic", progress=False)).resolve())
    before = machine()
    sides = ("none", args.pruner)
    studies: dict[str, list[dict]] = {pruner: [] for pruner in sides}
    with tempfile.TemporaryDirectory() as scratch:
        for number in range(args.rounds):
            for pruner in sides if number % 2 == 0 else sides[::-1]:
                studies[pruner].append(run_in_process(pruner, args, data, Path(scratch)))
                print(describe(studies[pruner][-1]), flush=True)
    best = {pruner: max(runs, key=lambda figures: figures["trials_per_hour"]) for pruner, runs in studies.items()}
    ratio = best[args.pruner]["trials_per_hour"] / best["none"]["trials_per_hour"]
    results = {
        **before, "load_average_after": load_average(), "data": data, "trials": args.trials, "epochs": args.epochs,
        "image_size": args.image_size, "seed": args.seed, "rounds": args.rounds, "pruner": args.pruner, "studies": studies,
        "ratio_trials_per_hour": round(ratio, 2),
        "best_value": {pruner: figures["best_value"] for pruner, figures in best.items()},
    }  # fmt: skip
    print(f"{results['cpu']}, {results['date']}; load {results['load_average']} -> {results['load_average_after']}")
    print(f"best value: {args.pruner} {best[args.pruner]['best_value']:.4f}, none {best['none']['best_value']:.4f} "
          f"(goal: {args.pruner}'s equal or better)")  # fmt: skip
    save_results(results, args.out)
    print(f"ratio trials/hour {args.pruner}/none: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
