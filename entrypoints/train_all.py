"""`train_all` entry point: every variant (× seeds) as child runs of one parent run, then a comparison.

Hyperparameter flags (e.g. --epochs 2) apply to every variant.
"""

from __future__ import annotations

import argparse

from entrypoints import add_config_arguments, config_from_args, optional_int, optional_str, parse, report_errors
from mammo import tracking
from mammo.data.prepare import open_dataset
from mammo.model.variants import TrainConfig
from mammo.train.series import parse_seeds, parse_variants, train_series, with_folds


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="train_all", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=optional_str, default="1", help='a count ("3") or a list ("0,1,2") (default 1)')
    parser.add_argument(
        "--variants", type=optional_str, help="comma-separated subset, e.g. model3,model5 (default: all six)"
    )
    parser.add_argument(
        "--folds", type=optional_int, default=0,
        help="cross-validate every variant on K patient-grouped folds of the train split (default 0: off)",
    )  # fmt: skip
    add_config_arguments(parser)
    return parse(parser, argv)


def plan(args: argparse.Namespace) -> list[TrainConfig]:
    """Every (variant, seed) config, all validated before the first one trains."""
    first = int(args.seed) if args.seed not in (None, "") else 0
    seeds = parse_seeds(args.seeds, first=first)
    configs = [config_from_args(args, variant=v, seed=s) for v in parse_variants(args.variants) for s in seeds]
    return with_folds(configs, args.folds)


@report_errors("train_all")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configs = plan(args)
    dataset = open_dataset(args.data)
    from mammo.report import reports

    parent_run_id, table = train_series(configs, dataset, experiment=args.experiment)
    print(reports.markdown_table(table))
    print(f"compare them in the MLflow UI: {tracking.ui_link(tracking.get_run(parent_run_id).info.experiment_id)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
