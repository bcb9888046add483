"""Model 5 training img/s through the real input pipeline, with one endless iterator vs one per epoch.

`mammo.training.fit` trains on `splits.train.repeat()` with `steps_per_epoch`, so tf.data keeps a
single iterator; Keras' default for a finite dataset is a new iterator every epoch, which on the
2-core CPU sometimes stalled ~18 s with the CPU idle. This benchmark trains the quick-schedule
model5 (augmentation, standardisation, batch 32) on a prepared dataset both ways, in one process,
and prints the img/s of each (validation included, as in a real epoch) and their ratio. Usage:

    python -m bench.train_throughput --epochs 4 [--data data/prepared/synthetic] [--precision auto]
"""

from __future__ import annotations

import argparse
import time

import keras

from bench import save_results
from mammo.data.prepare import ensure_prepared
from mammo.data.store import load_prepared
from mammo.pipeline import make_datasets
from mammo.precision import choose_precision
from mammo.variants import build_model, make_config, make_optimizer


def measure(dataset, *, epochs: int, precision: str, repeat: bool) -> dict[str, float]:
    """img/s over `epochs` epochs after a 1-epoch warm-up (tracing excluded), and the slowest epoch."""
    config = make_config("model5", epochs=epochs, precision=precision)
    keras.utils.set_random_seed(config.seed)
    policy = choose_precision(config.precision)
    splits = make_datasets(dataset, config)
    model = build_model(config, dtype_policy=policy, pixel_stats=splits.pixel_stats)
    model.compile(optimizer=make_optimizer(config), loss="binary_crossentropy", jit_compile=False)
    train = splits.train.repeat() if repeat else splits.train
    steps = {"steps_per_epoch": splits.train_steps} if repeat else {}
    model.fit(train, validation_data=splits.val, epochs=1, verbose=0, shuffle=False, **steps)  # warm-up

    class EpochTimes(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            seconds.append(time.perf_counter() - self.started)

    seconds: list[float] = []
    model.fit(
        train, validation_data=splits.val, epochs=epochs, verbose=0, shuffle=False, callbacks=[EpochTimes()], **steps
    )
    images = len(splits.train_indices) * epochs
    return {"img_per_s": round(images / sum(seconds), 2), "slowest_epoch_s": round(max(seconds), 1), "policy": policy}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="prepared dataset (default: the synthetic one, prepared on first use)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--out", help="write the figures as JSON here too")
    args = parser.parse_args(argv)
    dataset = load_prepared(args.data or ensure_prepared("synthetic"))
    results = {"data": str(dataset.path), "epochs": args.epochs}
    for mode, repeat in (("one_iterator", True), ("iterator_per_epoch", False)):
        results[mode] = measure(dataset, epochs=args.epochs, precision=args.precision, repeat=repeat)
        print(f"{mode:>18}: {results[mode]}", flush=True)
    ratio = results["one_iterator"]["img_per_s"] / results["iterator_per_epoch"]["img_per_s"]
    results["ratio_one_to_per_epoch"] = round(ratio, 2)
    print(f"one iterator / iterator per epoch: {ratio:.2f}×")
    save_results(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
