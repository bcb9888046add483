"""`study` entry point: an Optuna search beyond Model 5, each trial a nested MLflow run.

Running it again with the same --storage and --study-name continues the study. Several
processes share one study through a journal file (one machine: --storage ./optuna.journal) or a
database (many machines: --storage postgresql://user@host/db, the password in PGPASSWORD or
~/.pgpass); --max-trials is then the number of complete + pruned trials they finish together.
Browse the default storage with `optuna-dashboard sqlite:///optuna.db`.

A worker killed mid-trial: on a database its trial is failed after --grace-period and retried by
another worker; on a journal file it stays RUNNING until `--fail-running-trials` (run it only
when no worker is running) fails it, re-queues its parameters and ends its MLflow runs FAILED.
"""

from __future__ import annotations

import argparse
import sys

from entrypoints import optional_float, optional_int, optional_str, report_errors
from mammo import search, tracking
from mammo.study import BEST_MODEL_CHOICES, StudyOutcome, StudySettings, fail_running_trials, run_study
from mammo.variants import SCHEDULES


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="study", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--n-trials", type=optional_int, help=f"trials this process runs (default {DEFAULT_N_TRIALS}, or no cap "
        "when --max-trials or --timeout is given)")  # fmt: skip
    add("--max-trials", type=optional_int, help="complete + pruned trials of the whole study, all workers together")
    add("--timeout", type=optional_float, help="stop starting trials after this many seconds")
    add("--study-name", type=optional_str, default=search.DEFAULT_STUDY_NAME)
    add("--storage", type=optional_str, default=search.DEFAULT_STORAGE, help="sqlite:///…, *.journal, RDB URL")
    add("--sampler", type=optional_str, default="tpe", help=f"one of {', '.join(search.SAMPLERS)} (seeded by --seed)")
    add("--pruner", type=optional_str, default="median", help=f"one of {', '.join(search.PRUNERS)}")
    add("--metric", type=optional_str, default=search.DEFAULT_METRIC, help=", ".join(search.METRIC_DIRECTIONS))
    add("--data", type=optional_str, help="prepared dataset folder (default: synthetic, prepared once)")
    add("--epochs", type=optional_int, help="epochs per trial (default: the schedule's)")
    add("--image-size", type=optional_int, help="train at this size (default: the dataset's; patches are resized)")
    add("--seed", type=optional_int, default=0, help="seeds the sampler and every trial's training")
    add("--schedule", choices=tuple(SCHEDULES), default="quick")
    add("--best-model", choices=BEST_MODEL_CHOICES, default="keep", help="skip: leave the verdict to another worker")
    add("--heartbeat-interval", type=optional_int, default=search.HEARTBEAT_INTERVAL, help="RDB storages, seconds")
    add("--grace-period", type=optional_int, default=search.GRACE_PERIOD, help="RDB: silent this long = stale")
    add("--max-retry", type=optional_int, default=search.MAX_RETRY, help="RDB: retries of a stale trial")
    add("--experiment", type=optional_str, help=f"MLflow experiment (default {tracking.EXPERIMENT})")
    add("--quiet", action="store_true", help="no Keras progress lines")
    add("--fail-running-trials", action="store_true", help="fail and re-queue the study's RUNNING trials (a killed "
        "worker's, journal storage), end their runs FAILED, then exit; only when no worker is running")  # fmt: skip
    return parser.parse_args(argv)


DEFAULT_N_TRIALS = 20
SETTINGS = (
    "study_name", "storage", "sampler", "pruner", "metric", "n_trials", "max_trials", "timeout", "epochs",
    "image_size", "seed", "schedule", "best_model", "heartbeat_interval", "grace_period", "max_retry",
)  # fmt: skip
NONE_IS_A_CHOICE = ("n_trials", "max_trials", "timeout", "epochs", "image_size")  # no limit / schedule's / dataset's


def settings_from_args(args: argparse.Namespace) -> StudySettings:
    """An empty MLproject value ("" → None) means the setting's default, or "unset" where that is a choice.

    Without --n-trials a worker runs 20 trials, unless --max-trials or --timeout bounds it: then
    it runs until the study's budget is met or the time is up, whatever the other workers do.
    """
    values = {name: getattr(args, name) for name in SETTINGS}
    if values["n_trials"] is None and values["max_trials"] is None and values["timeout"] is None:
        values["n_trials"] = DEFAULT_N_TRIALS
    chosen = {name: value for name, value in values.items() if value is not None or name in NONE_IS_A_CHOICE}
    return StudySettings(**chosen, verbose=0 if args.quiet else None)


@report_errors("study")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from_args(args)
    settings.check()
    if args.fail_running_trials:
        failed = fail_running_trials(settings)
        print(f"study {settings.study_name!r}: failed and re-queued running trials {failed or 'none'}")
        return 0
    search.open_storage(settings.storage)  # an unreachable or misspelt storage fails here, before TensorFlow loads
    if search.storage_has_password(settings.storage):
        print(
            "study: warning: --storage carries a password, which ends up in shell history and, under `mlflow run`, "
            "in the tracking store; leave it out of the URL and set PGPASSWORD or ~/.pgpass instead.",
            file=sys.stderr,
        )
    from mammo.data.prepare import open_dataset

    dataset = open_dataset(args.data)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # "retracing" notices: each trial builds a new model on purpose
    outcome = run_study(settings, dataset, experiment=args.experiment)
    print(report_line(outcome))
    return 0 if outcome.metrics.get("trials_complete", 0) > 0 else 1


def report_line(outcome: StudyOutcome) -> str:
    """One line for the log: counts, speed, best vs Model 5 and the verdict."""
    metrics, comparison = outcome.metrics, outcome.comparison
    counts = ", ".join(f"{metrics.get(f'trials_{state}', 0):.0f} {state}" for state in ("complete", "pruned", "failed"))
    line = (
        f"study {outcome.study.study_name!r}: {len(outcome.study.trials)} trials ({counts}); this run "
        f"{outcome.trials_run} in {outcome.seconds:.0f} s ({metrics['trials_per_hour']:.1f} trials/hour)"
    )
    if "best_value" in metrics:
        line += f"; best {metrics['best_value']:.4f} (trial {metrics['best_trial_number']:.0f})"
    if "model5_value" in metrics:
        line += f", Model 5 {metrics['model5_value']:.4f}"
    if comparison:
        line += f"; beats_model5={str(comparison['beats_model5']).lower()}"
        if "p_value" in comparison:
            line += f" (McNemar p={comparison['p_value']:.3g})"
    return line + f"; parent run {outcome.parent_run_id}"


if __name__ == "__main__":
    raise SystemExit(main())
