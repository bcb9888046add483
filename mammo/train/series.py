"""The published series side by side: every variant (× seeds) as child runs of one parent, then the comparison.

`train_series` is what `train_all` runs: the parent (the run `mlflow run` opened, or a new one)
gets comparison.csv/.md, the accuracy plot with 95 % intervals, the published figures beside ours
and each variant's McNemar p against model5 on the same test patches.
"""

from __future__ import annotations

import dataclasses
import gc
import sys
from collections.abc import Sequence

import numpy as np
import pandas as pd

from mammo import tracking
from mammo.core.errors import ConfigError, MammoError
from mammo.data.store import PreparedDataset
from mammo.model.variants import ALL_VARIANTS, VARIANTS, TrainConfig


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
    unknown = [name for name in names if name not in ALL_VARIANTS]  # backbones on request
    if unknown or not names:
        raise ConfigError(f"--variants: unknown {unknown}; choose from {', '.join(ALL_VARIANTS)}.")
    return names


def with_folds(configs: Sequence[TrainConfig], folds: int) -> list[TrainConfig]:
    """Every config once per cross-validation fold (folds=0: the configs as they are)."""
    if folds == 0:
        return list(configs)
    if folds < 2:
        raise ConfigError(f"--folds {folds}: give 0 (no cross-validation) or at least 2 folds.")
    return [dataclasses.replace(config, folds=folds, fold=fold) for config in configs for fold in range(folds)]


def train_series(
    configs: Sequence[TrainConfig], dataset: PreparedDataset, *, experiment: str | None = None
) -> tuple[str, pd.DataFrame]:
    """Train every config as a child run of one parent; returns (parent run id, the comparison table).

    With cross-validation configs (`with_folds`), each fold's model is one more replicate in the
    test comparison, and the parent also gets the CV table (`crossval.cv_table`) and the pairwise
    corrected p-values between variants.

    A child that raises (a bug, out of memory) ends FAILED with its error on it and the series
    goes on; the comparison lists it as failed. The parent ends FAILED only when no child finished.
    """
    import keras

    from mammo.report import reports
    from mammo.train.training import train_run

    results, failed = [], []
    tags = {tracking.ENTRY_TAG: "train_all"}
    with tracking.start_run(run_name="train_all", experiment=experiment, tags=tags) as parent:
        tracking.log_params({
            "variants": ",".join(dict.fromkeys(c.variant for c in configs)),
            "seeds": ",".join(str(s) for s in dict.fromkeys(c.seed for c in configs)),
            "schedule": configs[0].schedule, "data_source": dataset.source, "data_digest": dataset.digest,
        })  # fmt: skip
        tracking.log_prepared_input(dataset, context="training")
        for number, config in enumerate(configs, start=1):
            print(f"[{number}/{len(configs)}] {config.variant} seed {config.seed}", flush=True)
            replicate = (
                f"{config.seed}/fold{config.fold}" if config.folds else config.seed
            )  # pairs runs across variants
            started: list[str] = []
            try:
                run_id, result, metrics = train_run(
                    config, dataset, nested=True, parent_run_id=parent.info.run_id, experiment=experiment,
                    started=started,
                )  # fmt: skip
            except Exception as error:  # recorded on the child run (train_run); the other variants go on
                failed.append(failed_child(config.variant, replicate, started, error))
                keras.backend.clear_session()
                gc.collect()
                continue
            labels = dataset.labels[result.splits.test_indices]
            results.append({"variant": config.variant, "seed": replicate, "run_id": run_id, "metrics": metrics,
                            "probabilities": np.asarray(result.probabilities), "labels": labels,
                            "threshold": result.threshold})  # fmt: skip
            del result
            keras.backend.clear_session()  # free the finished model's graph before the next variant
            gc.collect()
        tracking.log_metrics({"children_finished": len(results), "children_failed": len(failed)})
        table = reports.comparison_table(results, failed=failed)
        reports.log_comparison(table, data_source=dataset.source)
        if configs[0].folds and results:
            log_cross_validation(results, folds=configs[0].folds)
        if not results:  # raised inside the run: the parent ends FAILED with the reason on it
            error = MammoError(
                f"all {len(failed)} runs of the series failed (first: {failed[0]['variant']}: {failed[0]['error']}); "
                f"each child run has its traceback under {tracking.TRACEBACK_FILE}."
            )
            tracking.record_failure(error)
            raise error
    return parent.info.run_id, table


def failed_child(variant: str, replicate: object, started: list[str], error: Exception) -> dict[str, object]:
    """What the comparison lists for a child that raised, and one line on stderr saying so."""
    run_id = started[0] if started else ""
    reason = tracking.failure_line(error)
    print(f"train_all: {variant} seed {replicate} FAILED (run {run_id or 'not started'}): {reason}", file=sys.stderr)
    return {"variant": variant, "seed": replicate, "run_id": run_id, "error": reason}


def log_cross_validation(results: list[dict], *, folds: int) -> pd.DataFrame:
    """The CV table, its markdown and the pairwise p-values, on the active (parent) run."""
    from mammo.report import reports
    from mammo.train import crossval

    rows = [{"variant": r["variant"], "fold": str(r["seed"])} | {m: r["metrics"].get(m) for m in crossval.CV_METRICS}
            for r in results]  # fmt: skip
    per_fold = pd.DataFrame(rows)
    ratio = 1.0 / (folds - 1)  # validation / training patches of one fold
    table = crossval.cv_table(per_fold, val_to_train=ratio)
    tracking.log_dataframe(table, tracking.CV_FILE)
    tracking.log_dataframe(crossval.pairwise_p(per_fold, val_to_train=ratio).reset_index(names="variant"),
                           tracking.CV_PAIRWISE_FILE)  # fmt: skip
    note = (f"{folds}-fold patient-grouped cross-validation of the train split; kept-checkpoint validation scores, "
            "mean ± sd over folds; p: Nadeau–Bengio corrected paired t-test on val AUC.\n\n")  # fmt: skip
    tracking.log_text(note + reports.markdown_table(table), tracking.CV_MARKDOWN)
    return table
