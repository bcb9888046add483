"""`train` entry point: one variant (default model5) on a prepared dataset, as one MLflow run.

Every hyperparameter flag left out keeps the variant's value under the chosen --schedule; the
values are parsed and checked by `variants.make_config`, so a bad one fails before any data is
read, with the parameter named. --data defaults to the synthetic dataset, prepared on first use.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from entrypoints import optional_str
from mammo import tracking
from mammo.data.store import PreparedDataset, load_prepared
from mammo.errors import MammoError
from mammo.variants import PRECISIONS, SCHEDULES, VARIANTS, TrainConfig, make_config

# Flags that override one TrainConfig field each (the CLI spelling uses dashes).
OVERRIDES = (
    "filters", "dense_units", "dropout", "l2", "learning_rate", "lr_decay", "batch_size", "epochs", "patience",
    "augment", "image_size", "seed", "split_by", "val_fraction", "standardize",
)  # fmt: skip


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--data, --schedule, --precision, --experiment and one flag per overridable hyperparameter."""
    parser.add_argument("--data", type=optional_str, help="prepared dataset folder (default: synthetic, prepared once)")
    parser.add_argument("--schedule", choices=tuple(SCHEDULES), default="quick", help="quick (2-core CPU) or published")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help="dtype policy (auto: fastest here)")
    parser.add_argument("--experiment", type=optional_str, help=f"MLflow experiment (default {tracking.EXPERIMENT})")
    group = parser.add_argument_group("hyperparameters (default: the variant's value)")
    for name in OVERRIDES:
        # `mlflow run -P learning_rate=…` passes undeclared parameters as `--learning_rate …`.
        flags = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
        group.add_argument(*flags, dest=name, type=optional_str, metavar="VALUE")


def config_from_args(args: argparse.Namespace, *, variant: str, seed: int | None = None) -> TrainConfig:
    overrides = {name: getattr(args, name) for name in OVERRIDES}
    if seed is not None:
        overrides["seed"] = seed
    return make_config(variant, schedule=args.schedule, precision=args.precision, **overrides)


def open_dataset(data: str | None) -> PreparedDataset:
    """The prepared dataset at `data`, or the synthetic default (prepared on first use, then reused)."""
    if data:
        return load_prepared(Path(data))
    from mammo.data.prepare import ensure_prepared

    return load_prepared(ensure_prepared("synthetic"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="train", description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=tuple(VARIANTS), default="model5")
    add_config_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = config_from_args(args, variant=args.variant)
        dataset = open_dataset(args.data)
    except MammoError as error:
        print(f"train: error: {error}", file=sys.stderr)
        return 2
    from mammo.training import train_run  # TensorFlow loads only once the arguments are good

    print(f"training {config.variant} ({config.schedule} schedule) on {dataset.path} [{dataset.digest}]", flush=True)
    run_id, result, metrics = train_run(config, dataset, experiment=args.experiment)
    print(
        f"run {run_id}: test accuracy {metrics['test_accuracy']:.4f} "
        f"[{metrics['test_accuracy_ci_low']:.4f}, {metrics['test_accuracy_ci_high']:.4f}], AUC {metrics['test_auc']:.4f}, "
        f"wrong {metrics['test_wrong']:.0f}, worst {metrics['test_worst']:.0f} of {len(result.probabilities)}; "
        f"best epoch {result.best_epoch}/{result.epochs_run} ({result.precision}, {result.train_seconds:.0f} s of fit)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
