"""Which run's model to put forward for promotion: chosen on the kept checkpoint's validation score.

The candidate is ranked on a validation metric (never test: the gate's test patches must judge a
model they did not choose), and on the value of the checkpoint the run's model holds (the kept,
best-val_loss epoch: `kept_val_auc` and friends), not the per-epoch series' last point.

Validation scores rank only like with like: runs of one `Protocol` (the same prepared dataset,
image size, `split_by` and `val_fraction`), never a cross-validation fold, and never a run
validated per image (`split_by=image`, leaky by design) unless asked for.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from mammo import tracking
from mammo.core.errors import ConfigError

SELECT_METRICS = ("val_auc", "val_accuracy", "val_loss")


PROTOCOL_PARAMS = ("data_digest", "image_size", "split_by", "val_fraction")


def _same_number_text(value: str) -> str:
    try:
        return f"{float(value):g}"
    except ValueError:
        return value


@dataclass(frozen=True)
class Protocol:
    """What two runs must share for their validation scores to compare: the data and how it was split."""

    data_digest: str
    image_size: str
    split_by: str
    val_fraction: str

    @classmethod
    def of(cls, params: dict[str, str]) -> Protocol:
        values = [str(params.get(name, "")) for name in PROTOCOL_PARAMS]
        return cls(values[0], _same_number_text(values[1]), values[2], _same_number_text(values[3]))

    def describe(self) -> str:
        return f"{self.image_size or '?'} px, split_by={self.split_by or '?'}, val_fraction={self.val_fraction or '?'}"


@dataclass(frozen=True)
class Candidate:
    """A finished run with a logged model: what gets registered."""

    run_id: str
    model_uri: str
    params: dict[str, str]
    metrics: dict[str, float]

    @property
    def protocol(self) -> Protocol:
        return Protocol.of(self.params)

    @property
    def data_digest(self) -> str:
        return self.params.get("data_digest", "")

    @property
    def cross_validated(self) -> bool:
        """A fold of train_all --folds: validated on one fold, so not comparable with a plain run."""
        return self.params.get("folds", "0") not in ("", "0")

    @property
    def per_image(self) -> bool:
        return self.params.get("split_by") == "image"


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


def run_candidate(run_id: str) -> Candidate:
    """The given run as a candidate (whatever its score), or a ConfigError when it logged no model."""
    run = tracking.get_run(run_id)
    models = tracking.logged_models(run.info.experiment_id, run_id=run_id)
    if not models:
        raise ConfigError(f"run {run_id} logged no model named '{tracking.MODEL_ARTIFACT}'; pass a training run.")
    return _candidate(run, models[0].model_uri)


def ranked_candidates(*, experiment_id: str, select_metric: str = "val_auc") -> list[Candidate]:
    """Every FINISHED run of the experiment with a model and the ranking metric, best first (all datasets)."""
    metric, ascending = ranking_metric(select_metric)
    model_uris: dict[str, str] = {}
    for model in tracking.logged_models(experiment_id):  # newest first: a run's latest model wins
        model_uris.setdefault(model.source_run_id, model.model_uri)
    return [
        _candidate(run, model_uris[run.info.run_id])
        for run in tracking.finished_runs(experiment_id, order_by_metric=metric, ascending=ascending)
        if run.info.run_id in model_uris and math.isfinite(run.data.metrics.get(metric, math.nan))
    ]


def comparable(ranked: list[Candidate], *, digest: str, allow_image_split: bool = False) -> list[Candidate]:
    """The runs of `ranked` trained on `digest` that may be ranked: no CV fold, per image only if allowed."""
    return [
        candidate
        for candidate in ranked
        if candidate.data_digest == digest and not candidate.cross_validated
        and (allow_image_split or not candidate.per_image)
    ]  # fmt: skip


def no_comparable_run(ranked: list[Candidate], *, digest: str, metric: str) -> ConfigError:
    """Why no run of dataset `digest` can be ranked, and what to do about it."""
    on_digest = [candidate for candidate in ranked if candidate.data_digest == digest]
    per_image = [candidate for candidate in on_digest if candidate.per_image and not candidate.cross_validated]
    if per_image:
        why = (
            f"its {len(per_image)} run(s) with a model were validated per image (split_by=image, leaky by design); "
            "pass --allow-image-split to rank them anyway"
        )
    elif on_digest:
        why = "its runs with a model are cross-validation folds, which validate on one fold only; train one plain run"
    else:
        why = f"no finished run with a model and {metric!r} trained on it; train one with --data <its folder>"
    return ConfigError(f"no run to promote on dataset {digest}: {why} (or pass --run-id). Nothing was registered.")


def _check_one_protocol(ranked: list[Candidate]) -> None:
    runs = Counter(candidate.protocol for candidate in ranked)
    if len(runs) > 1:
        listed = "; ".join(
            f"{protocol.describe()} ({count} run{'s' * (count > 1)})" for protocol, count in runs.items()
        )
        raise ConfigError(
            f"the runs of dataset {ranked[0].data_digest} were validated under {len(runs)} protocols ({listed}): "
            "their validation scores do not compare. Pass --run-id of the run to promote. Nothing was registered."
        )


def find_candidate(
    *, experiment_id: str, select_metric: str = "val_auc", run_id: str | None = None, digest: str | None = None,
    protocol: Protocol | None = None, allow_image_split: bool = False,
) -> Candidate:  # fmt: skip
    """The given run, or the best comparable FINISHED run of the experiment with a model.

    `digest` (and `protocol`, when the champion's own protocol is on that dataset) limit the ranking
    to runs comparable with the target; without them every run counts (one dataset only).
    """
    if run_id is not None:
        return run_candidate(run_id)
    metric, _ = ranking_metric(select_metric)
    ranked = ranked_candidates(experiment_id=experiment_id, select_metric=select_metric)
    if digest is not None:
        every = ranked
        ranked = comparable(every, digest=digest, allow_image_split=allow_image_split)
        if not ranked:
            raise no_comparable_run(every, digest=digest, metric=metric)
        if protocol is not None and protocol.data_digest == digest:
            ranked = [candidate for candidate in ranked if candidate.protocol == protocol] or ranked
        _check_one_protocol(ranked)
    if ranked:
        return ranked[0]
    raise ConfigError(
        f"no finished run in experiment {experiment_id} logged a model and the metric {metric!r} (the kept "
        "checkpoint's validation score); train one first (python -m entrypoints.train), or pass --run-id."
    )
