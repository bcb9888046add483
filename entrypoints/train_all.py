"""`train_all` entry point: every variant (× seeds) as child runs of one parent run, then a comparison.

The parent (the run `mlflow run` opened, or a new one) logs comparison.csv/.md, the accuracy
plot with 95 % intervals and each variant's McNemar p against model5 on the same test patches.
Hyperparameter flags (e.g. --epochs 2) apply to every variant.
"""

from __future__ import annotations

import argparse
import gc
import sys

import numpy as np

from entrypoints import optional_str
from entrypoints.train import add_config_arguments, config_from_args, open_dataset
from mammo import tracking
from mammo.errors import ConfigError, MammoError
from mammo.variants import VARIANTS, TrainConfig


def parse_seeds(text: str | None, *, first: int = 0) -> list[int]:
    """A count ("3": three seeds from `first`) or a list ("0,1,2": exactly those)."""
    text = (text or "1").strip()
    try:
        if "," in text:
            seeds = [int(part) for part in text.split(",") if part.strip()]
        else:
            seeds = list(range(first, first + int(text)))
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: give a count (3) or a comma-separated list (0,1,2).") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: need at least one seed, none negative, no repeats.")
    return seeds


def parse_variants(text: str | None) -> list[str]:
    names = [name.strip() for name in (text or ",".join(VARIANTS)).split(",") if name.strip()]
    unknown = [name for name in names if name not in VARIANTS]
    if unknown or not names:
        raise ConfigError(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}.")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="train_all", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=optional_str, default="1", help='a count ("3") or a list ("0,1,2")')
    parser.add_argument("--variants", type=optional_str, help="comma-separated subset (default: all six)")
    add_config_arguments(parser)
    return parser.parse_args(argv)


def plan(args: argparse.Namespace) -> list[TrainConfig]:
    """Every (variant, seed) config, all validated before the first one trains."""
    first = int(args.seed) if args.seed not in (None, "") else 0
    seeds = parse_seeds(args.seeds, first=first)
    return [config_from_args(args, variant=v, seed=s) for v in parse_variants(args.variants) for s in seeds]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        configs = plan(args)
        dataset = open_dataset(args.data)
    except (MammoError, ValueError) as error:
        print(f"train_all: error: {error}", file=sys.stderr)
        return 2
    import keras

    from mammo import reports
    from mammo.training import train_run

    results = []
    with tracking.start_run(
        run_name="train_all", experiment=args.experiment, tags={"mammo.entry": "train_all"}
    ) as parent:
        tracking.log_params({
            "variants": ",".join(dict.fromkeys(c.variant for c in configs)),
            "seeds": ",".join(str(s) for s in dict.fromkeys(c.seed for c in configs)), "schedule": args.schedule,
            "data_source": dataset.source, "data_digest": dataset.digest,
        })  # fmt: skip
        tracking.log_prepared_input(dataset, context="training")
        for number, config in enumerate(configs, start=1):
            print(f"[{number}/{len(configs)}] {config.variant} seed {config.seed}", flush=True)
            run_id, result, metrics = train_run(
                config, dataset, nested=True, parent_run_id=parent.info.run_id, experiment=args.experiment
            )
            labels = dataset.labels[result.splits.test_indices]
            results.append({"variant": config.variant, "seed": config.seed, "run_id": run_id, "metrics": metrics,
                            "probabilities": np.asarray(result.probabilities), "labels": labels})  # fmt: skip
            del result
            keras.backend.clear_session()  # free the finished model's graph before the next variant
            gc.collect()
        table = reports.comparison_table(results)
        reports.log_comparison(table)
    print(reports.markdown_table(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
