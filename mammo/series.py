"""The published series side by side: every variant (× seeds) as child runs of one parent, then the comparison.

`train_series` is what `train_all` runs: the parent (the run `mlflow run` opened, or a new one)
gets comparison.csv/.md, the accuracy plot with 95 % intervals, the published figures beside ours
and each variant's McNemar p against model5 on the same test patches.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence

import numpy as np
import pandas as pd

from mammo import tracking
from mammo.data.store import PreparedDataset
from mammo.errors import ConfigError
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


def train_series(
    configs: Sequence[TrainConfig], dataset: PreparedDataset, *, experiment: str | None = None
) -> tuple[str, pd.DataFrame]:
    """Train every config as a child run of one parent; returns (parent run id, the comparison table)."""
    import keras

    from mammo import reports
    from mammo.training import train_run

    results = []
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
            run_id, result, metrics = train_run(
                config, dataset, nested=True, parent_run_id=parent.info.run_id, experiment=experiment
            )
            labels = dataset.labels[result.splits.test_indices]
            results.append({"variant": config.variant, "seed": config.seed, "run_id": run_id, "metrics": metrics,
                            "probabilities": np.asarray(result.probabilities), "labels": labels})  # fmt: skip
            del result
            keras.backend.clear_session()  # free the finished model's graph before the next variant
            gc.collect()
        table = reports.comparison_table(results)
        reports.log_comparison(table)
    return parent.info.run_id, table
