"""Which run's model to put forward for promotion: chosen on the kept checkpoint's validation score.

The candidate is ranked on a validation metric (never test: the gate's test patches must judge a
model they did not choose), and on the value of the checkpoint the run's model holds (the kept,
best-val_loss epoch: `kept_val_auc` and friends), not the per-epoch series' last point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mammo import tracking
from mammo.errors import ConfigError

SELECT_METRICS = ("val_auc", "val_accuracy", "val_loss")


@dataclass(frozen=True)
class Candidate:
    """A finished run with a logged model: what gets registered."""

    run_id: str
    model_uri: str
    params: dict[str, str]
    metrics: dict[str, float]


def ranking_metric(select_metric: str) -> tuple[str, bool]:
    """(the logged kept-checkpoint metric to rank on, ascending?) for a --select-metric value."""
    if select_metric.startswith("test"):
        raise ConfigError(
            f"--select-metric {select_metric} is a test metric; pick the candidate on validation (e.g. val_auc, "
            "val_accuracy, val_loss) so the gate's test patches judge a model they did not choose."
        )
    plain = select_metric.removeprefix(tracking.KEPT_PREFIX)
    if plain not in SELECT_METRICS:
        raise ConfigError(f"--select-metric must be one of {', '.join(SELECT_METRICS)}; got {select_metric!r}.")
    return tracking.kept_metric(plain), plain.endswith("loss")


def _candidate(run: Any, model_uri: str) -> Candidate:
    return Candidate(run.info.run_id, model_uri, dict(run.data.params), dict(run.data.metrics))


def find_candidate(*, experiment_id: str, select_metric: str = "val_auc", run_id: str | None = None) -> Candidate:
    """The given run, or the best FINISHED run of the experiment with a model, by the kept checkpoint's score."""
    metric, ascending = ranking_metric(select_metric)
    if run_id is not None:
        run = tracking.get_run(run_id)
        models = tracking.logged_models(run.info.experiment_id, run_id=run_id)
        if not models:
            raise ConfigError(f"run {run_id} logged no model named '{tracking.MODEL_ARTIFACT}'; pass a training run.")
        return _candidate(run, models[0].model_uri)
    model_uris: dict[str, str] = {}
    for model in tracking.logged_models(experiment_id):  # newest first: a run's latest model wins
        model_uris.setdefault(model.source_run_id, model.model_uri)
    for run in tracking.finished_runs(experiment_id, order_by_metric=metric, ascending=ascending):
        if run.info.run_id in model_uris and math.isfinite(run.data.metrics.get(metric, math.nan)):
            return _candidate(run, model_uris[run.info.run_id])
    raise ConfigError(
        f"no finished run in experiment {experiment_id} logged a model and the metric {metric!r} (the kept "
        "checkpoint's validation score); train one first (python -m entrypoints.train), or pass --run-id."
    )
