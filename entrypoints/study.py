"""`study` entry point: an Optuna search beyond Model 5, each trial a nested MLflow run.

The same --storage and --study-name continue the study; workers share it through a journal file (one
machine) or PostgreSQL (password in PGPASSWORD or ~/.pgpass), --max-trials counting all of them. A killed
worker's trial is retried after --grace-period (PostgreSQL) or by `--fail-running-trials` (journal).
"""

from __future__ import annotations

import argparse
import sys

from entrypoints import add_switch, optional_float, optional_int, optional_str, parse, report_errors
from mammo import tracking
from mammo.model.variants import SCHEDULES
from mammo.search import space, study, study_report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="study", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--n-trials", type=optional_int, help=f"trials this process runs (default {study.DEFAULT_N_TRIALS}; no cap "
        "when --max-trials or --timeout is given)")  # fmt: skip
    add("--max-trials", type=optional_int, help="complete + pruned trials of the whole study, all workers together")
    add("--timeout", type=optional_float, help="stop starting trials after this many seconds")
    add("--study-name", type=optional_str, default=space.DEFAULT_STUDY_NAME, help="(default %(default)s)")
    add("--storage", type=optional_str, default=space.DEFAULT_STORAGE,
        help="sqlite:///…, a *.journal file, or postgresql://user@host/db (default %(default)s)")  # fmt: skip
    add("--sampler", type=optional_str, default="tpe", help=f"{', '.join(space.SAMPLERS)} (default %(default)s)")
    add("--pruner", type=optional_str, default="median", help=f"{', '.join(space.PRUNERS)} (default %(default)s)")
    add("--metric", type=optional_str, default=space.DEFAULT_METRIC,
        help=f"{', '.join(space.METRIC_DIRECTIONS)} (default %(default)s)")  # fmt: skip
    add("--data", type=optional_str, help="prepared dataset folder (default: synthetic, prepared once)")
    add("--epochs", type=optional_int, help="epochs per trial (default: the schedule's)")
    add("--image-size", type=optional_int, help="train at this size (default: the dataset's; patches are resized)")
    add("--seed", type=optional_int, default=0, help="seeds the sampler and every trial (default %(default)s)")
    add("--schedule", choices=tuple(SCHEDULES), default="quick", help="(default %(default)s)")
    add("--backbones", type=optional_str, help="backbones to search besides scratch, e.g. vgg16,efficientnetb0")
    add("--weights", type=optional_str, default="imagenet", help="backbone trials' weights: imagenet, none or a file")
    add(
        "--best-model",
        choices=study.BEST_MODEL_CHOICES,
        default="keep",
        help="skip: leave the verdict to another worker",
    )
    add(
        "--heartbeat-interval", type=optional_int, default=space.HEARTBEAT_INTERVAL, help="RDB, s (default %(default)s)"
    )
    add("--grace-period", type=optional_int, default=space.GRACE_PERIOD, help="RDB: silent this long = stale, s")
    add("--max-retry", type=optional_int, default=space.MAX_RETRY, help="RDB: retries of a stale trial")
    add("--experiment", type=optional_str, help=f"MLflow experiment (default {tracking.EXPERIMENT})")
    add_switch(parser, "--quiet", help="no Keras progress lines")
    add_switch(parser, "--fail-running-trials", help="fail and re-queue the study's RUNNING trials (a killed "
        "worker's, journal storage), end their runs FAILED, then exit; only when no worker is running")  # fmt: skip
    return parse(parser, argv)


@report_errors("study")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = study.settings_from_options(vars(args), quiet=args.quiet)
    settings.check()
    if args.fail_running_trials:
        failed = study.fail_running_trials(settings)
        print(f"study {settings.study_name!r}: failed and re-queued running trials {failed or 'none'}")
        return 0
    space.open_storage(settings.storage)  # an unreachable or misspelt storage fails here, before TensorFlow loads
    if warning := space.password_warning(settings.storage):
        print(f"study: warning: {warning}", file=sys.stderr)
    from mammo.data.prepare import open_dataset

    outcome = study.run_study(settings, open_dataset(args.data), experiment=args.experiment)
    print(study_report.summary_line(outcome))
    return 0 if outcome.metrics.get("trials_complete", 0) > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
