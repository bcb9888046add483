"""What a study invocation's parent run reports: counts, the best trial, Optuna's plots, Model 5.

Compute, then render: `study_summary` and `compare_with_reference` return numbers (the tests
check those), `study_figures` turns the study into figures, and `log_study_summary` /
`log_comparison` log them through `tracking`. A plot that needs more finished trials than the
study has is replaced by a figure saying so, so small or unlucky studies still log all four.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import optuna
import pandas as pd
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial, TrialState

from mammo import tracking
from mammo.core.errors import ConfigError
from mammo.report import evaluation
from mammo.search import space

SIGNIFICANCE = 0.05  # beats_model5 needs a McNemar p below this as well as a higher test accuracy
BEST_PREFIX = "best_"
MODEL5_IS_BEST = "the best trial is Model 5 itself"

# artifact → (minimum complete trials, Optuna's matplotlib plot)
PLOTS: dict[str, tuple[int, Callable[[optuna.Study], Any]]] = {
    tracking.PLOT_OPTUNA_HISTORY: (1, optuna.visualization.matplotlib.plot_optimization_history),
    tracking.PLOT_OPTUNA_IMPORTANCES: (2, optuna.visualization.matplotlib.plot_param_importances),
    tracking.PLOT_OPTUNA_PARALLEL: (1, optuna.visualization.matplotlib.plot_parallel_coordinate),
    tracking.PLOT_OPTUNA_SLICE: (1, optuna.visualization.matplotlib.plot_slice),
}


def study_summary(study: optuna.Study, *, best: FrozenTrial | None = None) -> tuple[dict[str, Any], dict[str, float]]:
    """(params, metrics) for the parent run: counts, the best trial, and how far past Model 5 it got.

    best_<param> go in both: params keep the exact value, metrics make them sortable columns.
    improvement_over_model5 is signed so that positive always means better than Model 5. `best`
    defaults to `space.best_trial`; the study passes the tied trial whose model it keeps.
    """
    metrics: dict[str, float] = {name: float(count) for name, count in space.trial_counts(study).items()}
    params: dict[str, Any] = {}
    best = best or space.best_trial(study)
    if best is not None:
        metrics |= {"best_value": float(best.value), "best_trial_number": float(best.number)}
        params |= {f"{BEST_PREFIX}{name}": value for name, value in best.params.items()}
        params[f"{BEST_PREFIX}filters"] = "-".join(
            str(count) for count in space.filters_for(best.params["base_filters"], best.params["blocks"])
        )
        metrics |= {
            f"{BEST_PREFIX}{name}": float(value)
            for name, value in best.params.items()
            if isinstance(value, int | float)
        }
    reference = space.reference_trial(study, states=(TrialState.COMPLETE,))
    if reference is not None:
        metrics["model5_value"] = float(reference.value)
        if best is not None:
            sign = 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
            metrics["improvement_over_model5"] = sign * (float(best.value) - float(reference.value))
    return params, metrics


def placeholder_figure(title: str, reason: str) -> Figure:
    """A figure that says why the plot is missing, so every study logs the same artifacts."""
    figure = Figure(figsize=(6.4, 3.2))
    axes = figure.add_subplot()
    axes.axis("off")
    axes.text(0.5, 0.6, title, ha="center", va="center", fontsize=13, weight="bold")
    axes.text(0.5, 0.35, reason, ha="center", va="center", fontsize=10, wrap=True)
    return figure


def study_figures(study: optuna.Study) -> dict[str, Figure]:
    """Optuna's history, importances, parallel-coordinate and slice plots, by artifact path."""
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    figures: dict[str, Figure] = {}
    for artifact, (needed, plot) in PLOTS.items():
        title = artifact.rsplit("/", 1)[-1].removesuffix(".png").replace("_", " ")
        if complete < needed:
            reason = f"needs ≥ {needed} complete trial{'s' if needed > 1 else ''}; the study has {complete}"
            figures[artifact] = placeholder_figure(title, reason)
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the matplotlib back-end is "experimental"
                axes = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as error:  # e.g. importances of a constant space
            figures[artifact] = placeholder_figure(title, f"could not be drawn: {error}")
            continue
        # Optuna lays out and sizes its own figures (colour bars included); tight_layout would break them.
        figures[artifact] = np.asarray(axes).reshape(-1)[0].get_figure()
    return figures


def log_study_summary(
    study: optuna.Study, *, best: FrozenTrial | None = None, extra_metrics: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Log the summary params, metrics and the four plots to the active (parent) run."""
    params, metrics = study_summary(study, best=best)
    metrics |= dict(extra_metrics or {})
    if params:
        tracking.log_params(params)
    tracking.log_metrics({name: value for name, value in metrics.items() if math.isfinite(value)})
    for artifact, figure in study_figures(study).items():
        tracking.log_figure(figure, artifact)
    return metrics


def compare_with_reference(best: pd.DataFrame, reference: pd.DataFrame) -> dict[str, Any]:
    """Best model vs Model 5 on the same test patches: accuracies, exact McNemar p, and the verdict.

    Both tables are predictions.csv of a run (index, label, probability, and `predicted`: the label
    at the model's own decision threshold, the rule it is served with; tables without it are read at
    0.5). beats_model5 means a higher test accuracy *and* McNemar p < 0.05: with a few hundred test
    patches a gap of a point or two is noise, and "beats" should not be claimed on noise.
    """
    merged = best.merge(reference, on="index", suffixes=("_best", "_reference"), validate="one_to_one")
    if len(merged) != len(best) or len(merged) != len(reference):
        raise ValueError(
            f"the best run scored {len(best)} test patches and the Model 5 run {len(reference)}, {len(merged)} shared; "
            "McNemar needs both models' predictions on the same patches (same prepared dataset)."
        )
    if not (merged["label_best"] == merged["label_reference"]).all():
        raise ValueError("the two runs disagree on test labels: they were scored on different datasets.")
    labels = merged["label_best"].to_numpy()
    predicted_best, predicted_reference = _decisions(merged, "_best"), _decisions(merged, "_reference")
    p_value, only_best, only_reference = evaluation.mcnemar_test(labels, predicted_best, predicted_reference)
    accuracy_best = float((predicted_best == labels).mean())
    accuracy_reference = float((predicted_reference == labels).mean())
    return {
        "p_value": p_value,
        "only_best_right": only_best,
        "only_model5_right": only_reference,
        "test_accuracy_best": accuracy_best,
        "test_accuracy_model5": accuracy_reference,
        "beats_model5": bool(accuracy_best > accuracy_reference and p_value < SIGNIFICANCE),
    }


def _decisions(merged: pd.DataFrame, suffix: str) -> np.ndarray:
    """One run's 0/1 labels: as its predictions.csv recorded them (its own threshold), else p > 0.5."""
    if f"predicted{suffix}" in merged.columns:
        return merged[f"predicted{suffix}"].to_numpy(dtype=np.int64)
    return evaluation.predict_labels(merged[f"probability{suffix}"])


def _dataset_of(run_id: str) -> str | None:
    try:
        return tracking.get_run(run_id).data.params.get("data_digest")
    except ConfigError:  # not in this store: the predictions below say it
        return None


def _other_datasets(best_run_id: str, reference_run_id: str) -> tuple[str, str] | None:
    """(best's data_digest, Model 5's) when both are known and differ, else None."""
    best, reference = _dataset_of(best_run_id), _dataset_of(reference_run_id)
    return (best, reference) if best and reference and best != reference else None


def log_comparison(*, best_run_id: str, reference_run_id: str | None, parent_run_id: str) -> dict[str, Any]:
    """Tag the best run and the parent with beats_model5 and the McNemar p against the Model 5 trial.

    beats_model5 is "unknown" (with the reason in `beats_model5_reason`) when Model 5 has no
    complete trial with test predictions, e.g. it failed or ran on another tracking server, or when
    its run was trained on another dataset (`data_digest`) than the best one.
    """
    if reference_run_id is None:
        comparison: dict[str, Any] = {"beats_model5": "unknown", "reason": "no complete Model 5 trial in the study"}
    elif reference_run_id == best_run_id:
        comparison = {"beats_model5": False, "p_value": 1.0, "reason": MODEL5_IS_BEST}
    elif datasets := _other_datasets(best_run_id, reference_run_id):
        comparison = {
            "beats_model5": "unknown",
            "reason": f"the Model 5 run {reference_run_id} was trained on dataset {datasets[1]}, the best run on "
            f"{datasets[0]}: their test patches differ, so they are not compared",
        }
    else:
        try:
            best = tracking.load_run_table(best_run_id, tracking.PREDICTIONS_FILE)
            reference = tracking.load_run_table(reference_run_id, tracking.PREDICTIONS_FILE)
            comparison = compare_with_reference(best, reference)
        except (OSError, ValueError, LookupError) as error:  # MLflow raises OSError subclasses for missing files
            comparison = {"beats_model5": "unknown", "reason": f"predictions unavailable: {error}"}
    tags = {tracking.BEATS_MODEL5_TAG: str(comparison["beats_model5"]).lower(), "model5_run_id": reference_run_id or ""}
    if "reason" in comparison:
        tags["beats_model5_reason"] = comparison["reason"]
    metrics = {tracking.MCNEMAR_MODEL5: comparison["p_value"]} if "p_value" in comparison else {}
    tracking.tag_run(best_run_id, tags, metrics=metrics)
    tracking.tag_run(parent_run_id, {**tags, "best_run_id": best_run_id}, metrics=metrics)
    return comparison


def summary_line(outcome: Any) -> str:
    """One line for the log (a `study.StudyOutcome`): counts, speed, best vs Model 5 and the verdict."""
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
    if comparison.get("reason") == MODEL5_IS_BEST:
        line += f"; {MODEL5_IS_BEST}"
    elif comparison:
        line += f"; beats_model5={str(comparison['beats_model5']).lower()}"
        if "p_value" in comparison:
            line += f" (McNemar p={comparison['p_value']:.3g})"
    return line + f"; parent run {outcome.parent_run_id}"
