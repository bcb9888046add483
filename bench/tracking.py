"""Tracking overhead: what our MLflow logging costs per epoch and per study trial, on a local SQLite store.

Per epoch: the time of `training.MlflowEpochLogger.on_epoch_end` (one `tracking.log_metrics` call with
the six epoch metrics, synchronous) against a model5 epoch on this machine (`--epoch-seconds`, or
measured: float32 `fit` on random 150×150 patches, scaled to the synthetic default's training split),
beside MLflow's asynchronous logging (`log_metrics(..., synchronous=False)`: the call, and per epoch
with the queue flushed at the end) and `MlflowClient.log_batch`. Per study: a simulated 100-trial
study with no training (each trial a nested run with the tags, the params, the dataset input, 8 epochs
of the 6 epoch metrics, the final test metrics, predictions.csv and the state tag), synchronous and
with `mlflow.config.enable_async_logging()`. The sides alternate over rounds (best per side).
Prints the logging share of an epoch last (goal ≤ 1 %). Usage:

    python -m bench.tracking [--epoch-seconds S] [--trials 100] [--rounds 2] [--out result.json]
    python -m bench.tracking --quick
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench import load_average, machine, save_results

EPOCH_VALUES = {"loss": 0.41, "accuracy": 0.83, "val_loss": 0.45, "val_accuracy": 0.8, "val_auc": 0.88}


def measure_epoch_seconds(train_images: int) -> float:
    """A model5 epoch here: float32 `fit` img/s on random patches (after a warm-up epoch), for `train_images`."""
    import keras

    from mammo.model.variants import build_model, make_config, make_optimizer

    config = make_config("model5", precision="float32")
    keras.utils.set_random_seed(0)
    model = build_model(config, dtype_policy="float32", pixel_stats=(0.5, 0.2))
    model.compile(optimizer=make_optimizer(config), loss="binary_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    images = rng.random((256, config.image_size, config.image_size, 1), dtype=np.float32)
    labels = rng.integers(0, 2, size=(256, 1)).astype(np.float32)
    model.fit(images, labels, batch_size=config.batch_size, epochs=1, verbose=0)  # warm-up: tracing
    started = time.perf_counter()
    model.fit(images, labels, batch_size=config.batch_size, epochs=1, verbose=0)
    return (time.perf_counter() - started) / len(images) * train_images


def per_call(call: Callable[[int], object], count: int) -> list[float]:
    seconds = []
    for step in range(1, count + 1):
        started = time.perf_counter()
        call(step)
        seconds.append(time.perf_counter() - started)
    return seconds


def epoch_sides(run_id: str) -> dict[str, Callable[[int], object]]:
    """One epoch's logging, four ways (each logs the six epoch metrics at `step`)."""
    import mlflow
    from mlflow.entities import Metric

    from mammo.train.training import MlflowEpochLogger

    logger, client = MlflowEpochLogger(), mlflow.MlflowClient()

    def logs(step: int) -> dict[str, float]:
        return {**EPOCH_VALUES, "learning_rate": 1e-3 / (1 + 1e-3 * step)}

    def batch(step: int) -> None:
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(key, value, now, step) for key, value in logs(step).items()])

    return {
        "sync (MlflowEpochLogger)": lambda step: logger.on_epoch_end(step - 1, logs(step)),
        "async call": lambda step: mlflow.log_metrics(logs(step), step=step, synchronous=False),
        "log_batch": batch,
    }


def time_epochs(epochs: int, rounds: int) -> dict[str, dict[str, float]]:
    """ms per epoch of each side (its best round's median), and async with its flush counted."""
    import mlflow

    from mammo import tracking

    samples: dict[str, list[float]] = {}
    flushed: list[float] = []
    with tracking.start_run(run_name="bench-epochs", experiment="bench-tracking") as run:
        sides = epoch_sides(run.info.run_id)
        for number in range(rounds):
            order = list(sides) if number % 2 == 0 else list(sides)[::-1]
            for side in order:
                offset = 10_000 * (number * len(sides) + order.index(side))  # fresh steps: no overwrites
                seconds = per_call(lambda step, side=side, offset=offset: sides[side](offset + step), epochs)
                if side == "async call":
                    started = time.perf_counter()
                    mlflow.flush_async_logging()
                    flushed.append((sum(seconds) + time.perf_counter() - started) / epochs)
                samples[side] = min(samples.get(side, [float("inf")]), seconds, key=statistics.median)
    result = {side: {"median_ms": round(statistics.median(values) * 1000, 3),
                     "p95_ms": round(float(np.percentile(values, 95)) * 1000, 3)} for side, values in samples.items()}  # fmt: skip
    result["async incl. flush"] = {"mean_ms": round(min(flushed) * 1000, 3)}
    return result


def simulate_trial(number: int, *, parent_run_id: str, params: dict, dataset, predictions, epochs: int) -> None:
    """What a study trial logs, with no training (mammo.search.study's TrialObjective and log_scores)."""
    from mammo import tracking
    from mammo.train.training import MlflowEpochLogger

    tags = {tracking.STUDY_TAG: "bench", tracking.TRIAL_NUMBER_TAG: str(number), "mammo.entry": "study"}
    with tracking.start_run(run_name=f"trial-{number}", parent_run_id=parent_run_id, tags=tags):
        tracking.set_tags({tracking.VARIANT_TAG: "optuna"})
        tracking.log_params(params)
        tracking.log_prepared_input(dataset, context="training")
        logger = MlflowEpochLogger()
        for epoch in range(epochs):
            logger.on_epoch_end(epoch, {**EPOCH_VALUES, "learning_rate": 1e-3})
        tracking.log_metrics({name: 0.5 for name in (*tracking.TEST_METRICS, *tracking.KEPT_METRICS, "best_epoch")})
        tracking.log_dataframe(predictions, tracking.PREDICTIONS_FILE)
        tracking.log_metrics({tracking.OPTUNA_VALUE: 0.9})
        tracking.set_tags({tracking.TRIAL_STATE_TAG: "complete"})


def time_study(trials: int, *, epochs: int, asynchronous: bool) -> float:
    """Seconds to log `trials` simulated trials under one parent run (async: the queue flushed at the end)."""
    import mlflow

    from mammo import tracking
    from mammo.data.prepare import ensure_prepared
    from mammo.data.store import load_prepared
    from mammo.model.variants import make_config
    from mammo.report import evaluation
    from mammo.train.training import run_params

    dataset = load_prepared(ensure_prepared("synthetic", progress=False))
    test = dataset.manifest[dataset.manifest["split"] == "test"]
    predictions = evaluation.predictions_table(test, np.linspace(0.01, 0.99, len(test)))
    params = run_params(make_config("model5"), dataset, precision="float32")
    mlflow.config.enable_async_logging(asynchronous)
    try:
        with tracking.start_run(
            run_name=f"bench-study-{'async' if asynchronous else 'sync'}", experiment="bench-tracking"
        ) as parent:
            started = time.perf_counter()
            for number in range(trials):
                simulate_trial(number, parent_run_id=parent.info.run_id, params=params, dataset=dataset,
                               predictions=predictions, epochs=epochs)  # fmt: skip
            mlflow.flush_async_logging()
            return time.perf_counter() - started
    finally:
        mlflow.config.enable_async_logging(False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epoch-seconds", type=float, help="a model5 epoch on this machine (default: measured)")
    parser.add_argument("--train-images", type=int, default=732, help="images per epoch (synthetic default: 732)")
    parser.add_argument("--epochs", type=int, default=200, help="logged epochs per side and round")
    parser.add_argument("--trials", type=int, default=100, help="trials of the simulated study")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a 10-trial study, 50 epochs, one round")
    parser.add_argument("--out", help="write the figures as JSON here too")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.trials, args.rounds = 50, 10, 1
    import mlflow

    before = machine()
    epoch_seconds = args.epoch_seconds or measure_epoch_seconds(args.train_images)
    with tempfile.TemporaryDirectory() as scratch:
        mlflow.set_tracking_uri(f"sqlite:///{Path(scratch) / 'mlflow.db'}")
        epochs = time_epochs(args.epochs, args.rounds)
        study: dict[str, float] = {}
        for number in range(args.rounds):
            for asynchronous in (False, True) if number % 2 == 0 else (True, False):
                side = "async" if asynchronous else "sync"
                seconds = time_study(args.trials, epochs=8, asynchronous=asynchronous)
                study[side] = min(study.get(side, float("inf")), seconds)
                print(f"round {number + 1}: {args.trials}-trial study, {side}: {seconds:.1f} s", flush=True)
    sync_ms = epochs["sync (MlflowEpochLogger)"]["median_ms"]
    share = sync_ms / 1000 / epoch_seconds
    results = {
        **before, "load_average_after": load_average(), "epoch_seconds": round(epoch_seconds, 2),
        "epoch_seconds_measured": args.epoch_seconds is None, "epochs_logged": args.epochs, "rounds": args.rounds,
        "per_epoch": epochs, "study_trials": args.trials,
        "study_seconds": {side: round(value, 2) for side, value in study.items()},
        "study_seconds_per_trial": {side: round(value / args.trials, 3) for side, value in study.items()},
        "logging_share_of_epoch": round(share, 6),
    }  # fmt: skip
    print(f"{results['cpu']}, {results['date']}; load {results['load_average']} -> {results['load_average_after']}")
    print(f"model5 epoch: {epoch_seconds:.1f} s ({'measured' if args.epoch_seconds is None else 'given'})")
    for side, row in epochs.items():
        print(f"per epoch, {side}: " + ", ".join(f"{key} {value:.2f}" for key, value in row.items()))
    for side, seconds in study.items():
        print(f"{args.trials}-trial study logging, {side}: {seconds:.1f} s, {seconds / args.trials:.3f} s per trial")
    save_results(results, args.out)
    print(f"logging share of an epoch: {share:.4%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
