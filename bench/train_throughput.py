"""Training-loop overhead: the project's `fit` against a bare Keras `model.fit` of the same model, in one process.

The project's side is `mammo.train.training.fit` as a training run uses it: tf.data reading batches from the
memory-mapped prepared store, augmentation as seeded Keras layers in the input pipeline, the
callbacks (best weights, learning-rate logger, early stopping) and MLflow logging of every epoch to
a real (temporary SQLite) run. The bare side is what a Keras user would write: the same model
(`variants.build_model`), the same augmentation layers (inside the model, active in training only),
the same batch, epochs and precision, `model.fit` on in-memory float32 arrays with the same
validation split each epoch.

A third side, "bare tf.data", is the bare fit without TensorFlow's teardown stall: the same in-memory
arrays through `tf.data.Dataset.from_tensor_slices(...).shuffle().batch().prefetch()` with autotuning
off, as the project's pipeline has it. On arrays, Keras builds a new autotuned tf.data iterator every
epoch, and destroying one waits for its autotuning thread (up to seconds with the cores idle; measured
2 s an epoch and 3.6 s at the end of a 3-epoch float32 fit on the Xeon), so the plain bare fit is slowed
by TensorFlow, not by Keras; the project is compared with both.

All sides are timed over `model.fit` alone (first-epoch tracing included). These CPUs have slow spells,
so the sides alternate for `--rounds` rounds and each side's best is compared. With both precisions it
also prints the mixed_bfloat16 speed-up over float32 of each side (goal: the project's ≥ 0.95 of bare
Keras's). The last line prints the ratios (goal ≥ 0.95 in every precision).

    python -m bench.train_throughput [--epochs 3] [--rounds 3] [--precisions float32,mixed_bfloat16] [--data ...]
"""

from __future__ import annotations

import argparse
import functools
import platform
import tempfile
import time
from pathlib import Path

import keras
import mlflow
import numpy as np
import tensorflow as tf

from bench import save_results
from mammo.core.pixels import scale_patches
from mammo.core.precision import choose_precision, cpu_flags
from mammo.data.prepare import open_dataset
from mammo.model.pipeline import augmentation, make_datasets, without_autotuning
from mammo.model.variants import build_model, make_config, make_optimizer
from mammo.train.training import MlflowEpochLogger, fit


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def project_fit(dataset, config) -> float:
    """img/s of `mammo.train.training.fit` with MLflow logging each epoch (train images × epochs / fit seconds)."""
    with mlflow.start_run():
        result = fit(config, dataset, callbacks=[MlflowEpochLogger()], verbose=0)
    return len(result.splits.train_indices) * result.epochs_run / result.train_seconds


def bare_fit(dataset, config, *, through_tf_data: bool = False) -> float:
    """img/s of a plain `model.fit` on in-memory arrays, same model, augmentation layers, batch and epochs.

    through_tf_data: hand fit the arrays as an in-memory tf.data pipeline with autotuning off instead
    of the arrays themselves (the "bare tf.data" side).
    """
    keras.utils.set_random_seed(config.seed)
    splits = make_datasets(dataset, config)  # only for the same rows and the same standardisation statistics
    x_train = scale_patches(np.asarray(dataset.patches[np.sort(splits.train_indices)]), image_size=config.image_size)
    y_train = dataset.labels[np.sort(splits.train_indices)].astype(np.float32)
    x_val = scale_patches(np.asarray(dataset.patches[splits.val_indices]), image_size=config.image_size)
    y_val = dataset.labels[splits.val_indices].astype(np.float32)
    core = build_model(config, dtype_policy=choose_precision(config.precision), pixel_stats=splits.pixel_stats)
    inputs = keras.Input(core.input_shape[1:])
    outputs = core(augmentation(config.augment, config.seed)(inputs) if config.augment > 0 else inputs)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=make_optimizer(config), loss="binary_crossentropy", jit_compile=False,
        metrics=["accuracy", keras.metrics.AUC(name="auc")],
    )  # fmt: skip
    started = time.perf_counter()
    if through_tf_data:
        train = tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(len(x_train), seed=config.seed)
        val = tf.data.Dataset.from_tensor_slices((x_val, y_val))
        model.fit(without_autotuning(train.batch(config.batch_size).prefetch(tf.data.AUTOTUNE)), epochs=config.epochs,
                  validation_data=without_autotuning(val.batch(config.batch_size).prefetch(tf.data.AUTOTUNE)),
                  verbose=0)  # fmt: skip
    else:
        model.fit(x_train, y_train, batch_size=config.batch_size, epochs=config.epochs,
                  validation_data=(x_val, y_val), shuffle=True, verbose=0)  # fmt: skip
    return len(x_train) * config.epochs / (time.perf_counter() - started)


BARE = ("bare", "bare tf.data")
SIDES = {
    "project": project_fit,
    "bare": bare_fit,
    "bare tf.data": functools.partial(bare_fit, through_tf_data=True),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="prepared dataset (default: the synthetic one, prepared on first use)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    native_bf16 = bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    parser.add_argument("--precisions", default="float32,mixed_bfloat16" if native_bf16 else "float32",
                        help="comma-separated (default: float32, plus mixed_bfloat16 where the CPU runs it natively)")  # fmt: skip
    parser.add_argument("--out", help="write the figures as JSON here too")
    args = parser.parse_args(argv)
    dataset = open_dataset(args.data)
    flags = sorted({"avx2", "avx512f", "avx512_bf16", "amx_bf16"} & cpu_flags())
    results: dict = {"cpu": cpu_name(), "flags": flags, "data": str(dataset.path), "epochs": args.epochs,
                     "rounds": args.rounds, "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    print(f"{results['cpu']} ({', '.join(flags)}), {args.epochs} epochs × {args.rounds} rounds", flush=True)
    ratios = {}
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        for precision in args.precisions.split(","):
            config = make_config("model5", epochs=args.epochs, precision=precision, patience=0)
            sides: dict[str, list[float]] = {side: [] for side in SIDES}
            for round_number in range(args.rounds):
                order = list(SIDES) if round_number % 2 == 0 else list(reversed(SIDES))
                for side in order:
                    rate = SIDES[side](dataset, config)
                    sides[side].append(round(rate, 2))
                    print(f"  {precision} round {round_number + 1} {side}: {rate:.1f} img/s", flush=True)
                    keras.backend.clear_session()
            best = {side: max(rates) for side, rates in sides.items()}
            ratios[precision] = {bare: round(best["project"] / best[bare], 3) for bare in BARE}
            results[precision] = {"img_per_s": sides, "best": best, "ratio": ratios[precision]}
            print(f"{precision}: " + ", ".join(f"{side} {rate:.1f} img/s" for side, rate in best.items()), flush=True)
    if {"float32", "mixed_bfloat16"} <= results.keys():  # the default's speed-up against bare Keras's
        speedups = {side: results["mixed_bfloat16"]["best"][side] / results["float32"]["best"][side] for side in SIDES}
        results["bf16_speedup"] = {
            **speedups,
            "ratio": {bare: round(speedups["project"] / speedups[bare], 3) for bare in BARE},
        }
        print("mixed_bfloat16 over float32: " + ", ".join(f"{side} {value:.2f}x" for side, value in speedups.items())
              + " (project/" + ", project/".join(f"{bare} {value:.3f}" for bare, value in results["bf16_speedup"]["ratio"].items())
              + ")", flush=True)  # fmt: skip
    save_results(results, args.out)
    print("project fit / bare Keras fit (best of rounds): " + "; ".join(
        f"{precision} " + ", ".join(f"/{bare} {value:.3f}" for bare, value in by_bare.items())
        for precision, by_bare in ratios.items()))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
