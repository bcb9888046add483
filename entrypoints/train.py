"""`train` entry point: one variant (default model5) on a prepared dataset, as one MLflow run.

Every hyperparameter flag left out keeps the variant's value under the chosen --schedule; the
values are parsed and checked by `variants.make_config`, so a bad one fails before any data is
read, with the parameter named. --data defaults to the synthetic dataset, prepared on first use.
Every epoch is checkpointed (`mammo.train.resume`): the same command with `--resume RUN_ID` continues a
killed run where it stopped, as does `mlflow run . -e train --run-id RUN_ID` with the same -P values.
"""

from __future__ import annotations

import argparse

from entrypoints import add_config_arguments, config_from_args, optional_int, optional_str, parse, report_errors
from mammo import tracking
from mammo.data.prepare import open_dataset
from mammo.model.variants import ALL_VARIANTS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="train", description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=tuple(ALL_VARIANTS), default="model5", help="(default %(default)s)")
    add_config_arguments(parser)
    parser.add_argument("--resume", type=optional_str, metavar="RUN_ID",
                        help="continue this killed run from its last epoch checkpoint (give the flags it was trained with)")  # fmt: skip
    parser.add_argument("--checkpoint-every", type=optional_int, default=0, metavar="N",
                        help="also upload the checkpoint to the run's artifacts every N epochs (0 = local only)")  # fmt: skip
    return parse(parser, argv)


@report_errors("train")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = config_from_args(args, variant=args.variant)
    dataset = open_dataset(args.data)
    from mammo.train.training import train_run  # TensorFlow loads only once the arguments are good

    print(f"training {config.variant} ({config.schedule} schedule) on {dataset.path} [{dataset.digest}]", flush=True)
    run_id, result, metrics = train_run(
        config,
        dataset,
        experiment=args.experiment,
        resume_run_id=args.resume,
        checkpoint_every=args.checkpoint_every or 0,
    )
    print(
        f"run {run_id}: test accuracy {metrics['test_accuracy']:.4f} "
        f"[{metrics['test_accuracy_ci_low']:.4f}, {metrics['test_accuracy_ci_high']:.4f}], AUC {metrics['test_auc']:.4f}, "
        f"wrong {metrics['test_wrong']:.0f}, worst {metrics['test_worst']:.0f} of {len(result.probabilities)}; "
        f"best epoch {result.best_epoch}/{result.epochs_run} ({result.precision}, {result.train_seconds:.0f} s of fit)"
    )
    print(f"in the MLflow UI: {tracking.ui_link(tracking.get_run(run_id).info.experiment_id, run_id)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
