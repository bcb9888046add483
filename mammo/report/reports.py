"""Evaluation reports logged to the active MLflow run: metrics, figures, predictions, comparisons.

Composes `evaluation` (numbers) and `plots` (figures from those numbers); every MLflow call goes
through `tracking`, under the names it defines, so the UI columns are the same for every run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from mammo import tracking
from mammo.core.pixels import scale_patches
from mammo.data.store import PreparedDataset
from mammo.report import evaluation, published, subgroups
from mammo.report import plots as plotting

REFERENCE_VARIANT = "model5"
WORST_COUNT = 12
SAMPLES_PER_CLASS = 4
DEFAULT_PREFIX = "test_"


def artifact_name(artifact_file: str, *, prefix: str = DEFAULT_PREFIX, suffix: str = "") -> str:
    """`plots/confusion.png` → `plots/confusion_end.png` for suffix `_end`, `plots/val_confusion.png` for `val_`.

    The test report under the default prefix keeps the constant names; any other prefix or a
    suffix gets its own files, so a second report in the same run never overwrites the first.
    """
    path = PurePosixPath(artifact_file)
    stem_prefix = "" if prefix == DEFAULT_PREFIX else prefix
    return str(path.with_name(f"{stem_prefix}{path.stem}{suffix}{path.suffix}"))


def _report_rows(dataset: PreparedDataset, indices: object, probabilities: object) -> tuple[np.ndarray, np.ndarray]:
    positions = np.asarray(indices, dtype=np.int64).reshape(-1)
    probability_array = np.asarray(probabilities, dtype=np.float64).reshape(-1)  # Keras predicts (N, 1)
    if len(positions) != len(probability_array):
        raise ValueError(
            f"indices has {len(positions)} rows but probabilities has {len(probability_array)}; "
            "pass the model's predictions for exactly the dataset rows in `indices`."
        )
    if len(positions) and (positions.min() < 0 or positions.max() >= len(dataset.manifest)):
        raise ValueError(f"indices must be row positions within 0..{len(dataset.manifest) - 1} of {dataset.path}")
    return positions, probability_array


def log_test_report(
    *,
    probabilities: np.ndarray,
    dataset: PreparedDataset,
    indices: np.ndarray,
    suffix: str = "",
    prefix: str = DEFAULT_PREFIX,
    loss: float | None = None,
    plots: bool = True,
    threshold: float = evaluation.DEFAULT_THRESHOLD,
) -> dict[str, float]:
    """Score predictions for the dataset rows `indices` and log the metrics (and figures) to the run.

    `loss`, when given, replaces the plain log loss with the number `model.evaluate` reports
    (which includes the L2 penalty), so the logged loss agrees with Keras. `threshold` is the
    model's decision threshold (chosen on validation, the one serving applies): accuracy, recalls,
    wrong/worst, sensitivity and specificity with their 95 % intervals, the confusion matrix, the
    worst panel, predictions.csv and the subgroups all count at it; the published analysis's
    figures at 0.5 are logged beside them as `*_at_0_5`. Returns the metrics.
    """
    positions, probability_array = _report_rows(dataset, indices, probabilities)
    rows = dataset.manifest.iloc[positions]
    labels = rows["label"].to_numpy(dtype=np.int64)
    metrics = evaluation.classification_metrics(
        labels, probability_array, prefix=prefix, suffix=suffix, threshold=threshold
    )
    if loss is not None:
        metrics[f"{prefix}loss{suffix}"] = float(loss)
    point = evaluation.operating_point(labels, probability_array, threshold)
    metrics |= {f"{prefix}{name}{suffix}": value for name, value in point.items() if name != "threshold"}
    tracking.log_metrics(metrics)
    if plots:
        _log_report_artifacts(
            dataset, positions, rows, probability_array, prefix=prefix, suffix=suffix, threshold=threshold
        )
    return metrics


def _log_report_artifacts(
    dataset: PreparedDataset, positions: np.ndarray, rows: pd.DataFrame, probabilities: np.ndarray, *, prefix: str,
    suffix: str, threshold: float,
) -> None:  # fmt: skip
    labels = rows["label"].to_numpy(dtype=np.int64)

    def name(artifact_file: str) -> str:
        return artifact_name(artifact_file, prefix=prefix, suffix=suffix)

    tracking.log_figure(
        plotting.plot_confusion(evaluation.confusion_counts(labels, probabilities, threshold=threshold)),
        name(tracking.PLOT_CONFUSION),
    )
    tracking.log_figure(plotting.plot_roc(labels, probabilities), name(tracking.PLOT_ROC))
    tracking.log_figure(
        plotting.plot_calibration(evaluation.calibration_bins(labels, probabilities)), name(tracking.PLOT_CALIBRATION)
    )
    # Only the shown patches are read from the memory map, not the whole split.
    selection = evaluation.select_errors(labels, probabilities, count=WORST_COUNT, threshold=threshold)
    worst_patches = np.asarray(dataset.patches[positions[selection.positions]])
    tracking.log_figure(plotting.plot_worst(worst_patches, selection), name(tracking.PLOT_WORST))
    tracking.log_dataframe(
        evaluation.predictions_table(rows, probabilities, threshold=threshold), name(tracking.PREDICTIONS_FILE)
    )
    table = subgroups.subgroup_metrics(rows, labels, probabilities, threshold=threshold)
    tracking.log_dataframe(table, name(tracking.SUBGROUPS_FILE))
    tracking.log_figure(plotting.plot_subgroups(table), name(tracking.PLOT_SUBGROUPS))


def log_saliency(
    *, model: Any, dataset: PreparedDataset, indices: np.ndarray, probabilities: np.ndarray,
    image_size: int | None = None, prefix: str = DEFAULT_PREFIX, suffix: str = "",
    threshold: float = evaluation.DEFAULT_THRESHOLD,
) -> None:  # fmt: skip
    """Log `saliency_figures` as plots/gradcam_worst.png and plots/gradcam_correct.png (renamed by prefix/suffix)."""
    figures = saliency_figures(
        model=model, dataset=dataset, indices=indices, probabilities=probabilities, image_size=image_size,
        threshold=threshold,
    )  # fmt: skip
    for artifact, figure in figures.items():
        tracking.log_figure(figure, artifact_name(artifact, prefix=prefix, suffix=suffix))


def saliency_figures(
    *, model: Any, dataset: PreparedDataset, indices: np.ndarray, probabilities: np.ndarray,
    image_size: int | None = None, threshold: float = evaluation.DEFAULT_THRESHOLD,
) -> dict[str, Any]:  # fmt: skip
    """Grad-CAM figures of the patches plots/worst.png shows and of a seeded sample of correct ones per class.

    Wrong and correct are at `threshold`, the model's own, as in the test report.

    `model` is the Keras model that made `probabilities` for the dataset rows `indices` (a training
    run's kept model; for evaluate, `serving.load_keras(model_uri)`). Only the chosen patches are read
    from the memory map, then scaled as training scales them (`pixels.scale_patches`: /65535 and a
    resize to `image_size`, default the model's input side); a model built with `standardize` holds
    its Normalization layer and standardises by itself, so nothing more is done here.
    Returns {tracking.PLOT_GRADCAM_WORST: Figure, tracking.PLOT_GRADCAM_CORRECT: Figure}.
    """
    from mammo.report import saliency  # TensorFlow: imported only by runs that have a Keras model anyway

    positions, probability_array = _report_rows(dataset, indices, probabilities)
    rows = dataset.manifest.iloc[positions]
    labels = rows["label"].to_numpy(dtype=np.int64)
    layer = saliency.last_conv_layer(model).name
    selection = evaluation.select_errors(labels, probability_array, count=WORST_COUNT, threshold=threshold)
    correct = evaluation.correct_sample(labels, probability_array, per_class=SAMPLES_PER_CLASS, threshold=threshold)
    shown = {
        tracking.PLOT_GRADCAM_WORST: (selection.positions, plotting.error_title(selection), 6,
                                      ["" if worst else "wrong, not worst" for worst in selection.worst]),
        tracking.PLOT_GRADCAM_CORRECT: (correct, f"correctly classified: {int((labels[correct] == 0).sum())} mass, "
                                        f"{int((labels[correct] == 1).sum())} calcification (seeded random sample)",
                                        SAMPLES_PER_CLASS, None),
    }  # fmt: skip
    side = int(image_size or model.input_shape[1])
    figures = {}
    for artifact, (chosen, what, columns, notes) in shown.items():
        images = _model_input(np.asarray(dataset.patches[positions[chosen]]), side)  # (k, side, side, 1)
        figures[artifact] = plotting.plot_gradcam(
            images, saliency.gradcam(model, images, threshold=threshold), labels=labels[chosen], probabilities=probability_array[chosen],
            patient_ids=rows["patient_id"].to_numpy()[chosen], notes=notes, columns=columns,
            title=f"Grad-CAM of the predicted class at layer {layer}\n{what}",
        )  # fmt: skip
    return figures


def _model_input(raw: np.ndarray, side: int) -> np.ndarray:
    """Raw uint16 patches (k, S, S) → what the model takes; an empty selection stays empty."""
    return scale_patches(raw, image_size=side) if len(raw) else np.zeros((0, side, side, 1), np.float32)


def log_training_plots(
    *, history: dict[str, list[float]], best_epoch: int, dataset: PreparedDataset, train_indices: np.ndarray
) -> None:
    """Learning curves (`best_epoch` 1-based, as the metric) and a few training patches per class."""
    tracking.log_figure(plotting.plot_curves(history, best_epoch=best_epoch), tracking.PLOT_CURVES)
    positions = np.asarray(train_indices, dtype=np.int64).reshape(-1)
    labels = dataset.labels[positions]
    chosen = np.concatenate([positions[labels == label][:SAMPLES_PER_CLASS] for label in (0, 1)])
    sample_patches = np.asarray(dataset.patches[chosen])
    figure = plotting.plot_samples(sample_patches, dataset.labels[chosen], per_class=SAMPLES_PER_CLASS)
    tracking.log_figure(figure, tracking.PLOT_SAMPLES)


def _run_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The child run's logged test metrics where given, the rest computed from its predictions at its threshold."""
    computed = evaluation.classification_metrics(
        result["labels"], result["probabilities"], threshold=result.get("threshold", evaluation.DEFAULT_THRESHOLD)
    )
    given = {key: float(value) for key, value in (result.get("metrics") or {}).items() if key in computed}
    return {**computed, **given}


def _median_mcnemar(runs: list[Mapping[str, Any]], reference_runs: list[Mapping[str, Any]]) -> float:
    """Median over shared seeds of the exact McNemar p, each seed paired on the same test patches.

    Per seed rather than pooled over seeds: pooling would count every test patch once per seed
    as if it were a new pair, overstating the evidence; each per-seed test is valid on its own.
    """
    reference_by_seed = {run.get("seed"): run for run in reference_runs}
    p_values = []
    for run in runs:
        reference = reference_by_seed.get(run.get("seed"))
        if reference is None:
            continue
        labels = np.asarray(run["labels"]).reshape(-1)
        if not np.array_equal(labels, np.asarray(reference["labels"]).reshape(-1)):
            raise ValueError(
                f"run {run.get('run_id')} and run {reference.get('run_id')} were scored on different test patches; "
                "McNemar needs both models' predictions on the same patches in the same order."
            )
        p_values.append(
            evaluation.mcnemar_test(
                labels, run["probabilities"], reference["probabilities"],
                threshold_a=run.get("threshold", evaluation.DEFAULT_THRESHOLD),
                threshold_b=reference.get("threshold", evaluation.DEFAULT_THRESHOLD),
            )[0]
        )  # fmt: skip
    return float(np.median(p_values)) if p_values else float("nan")


def comparison_table(
    results: list[dict], *, failed: Sequence[Mapping[str, Any]] = (), reference: str = REFERENCE_VARIANT
) -> pd.DataFrame:
    """One row per variant, means over its seeds, with the test-set interval and McNemar vs `reference`.

    results: one dict per child run with `variant`, `seed`, `run_id`, `probabilities` and
    `labels` (test) and optionally `threshold` (the model's decision threshold, default 0.5) and
    `metrics` (the test metrics the run logged). Accuracy, wrong/worst and McNemar count at each
    model's threshold; `test_accuracy_at_0_5`, `test_wrong_at_0_5` and `test_worst_at_0_5` are the
    published definitions at 0.5, the ones to read against published_*. ci_low/ci_high
    is the Wilson interval of the mean accuracy on the test-set size: the uncertainty that
    comes from having only that many test patches, the one the published table lacked.
    mcnemar_p_vs_model5 is the median over shared seeds of the per-seed exact McNemar p.
    published_test_accuracy / _wrong / _worst are the published project's (`mammo.report.published`), NaN
    where it published none; whether they compare with ours depends on the data (`log_comparison`).
    failed: one dict per child run that ended FAILED (`variant`, `seed`, `run_id`, `error`); when
    any did, a `failed` column counts them per variant and `error` gives the first one's reason, so a
    lost run shows in the table; a variant none of whose runs finished has a row with seeds 0 and no metrics.
    """
    if not results and not failed:
        raise ValueError("results is empty: train at least one variant before comparing.")
    for position, result in enumerate(results):
        missing = [key for key in ("variant", "probabilities", "labels") if key not in result]
        if missing:
            raise ValueError(
                f"results[{position}] lacks {missing}; each child run needs variant, probabilities, labels"
            )
    by_variant: dict[str, list[dict]] = {}
    for result in results:
        by_variant.setdefault(str(result["variant"]), []).append(result)
    reference_runs = by_variant.get(reference, [])
    rows = []
    for variant, runs in by_variant.items():
        metrics = pd.DataFrame([_run_metrics(run) for run in runs])
        accuracy = float(metrics["test_accuracy"].mean())
        low, high = evaluation.wilson_interval(accuracy, len(np.asarray(runs[0]["labels"]).reshape(-1)))
        rows.append(
            {
                "variant": variant,
                "seeds": len(runs),
                "test_accuracy": accuracy,
                "test_accuracy_sd": float(metrics["test_accuracy"].std(ddof=1)) if len(runs) > 1 else float("nan"),
                "ci_low": low,
                "ci_high": high,
                "test_auc": float(metrics["test_auc"].mean()),
                "test_wrong": float(metrics["test_wrong"].mean()),
                "test_worst": float(metrics["test_worst"].mean()),
                **{name: float(metrics[name].mean()) for name in tracking.AT_HALF_METRICS},
                f"mcnemar_p_vs_{reference}": _median_mcnemar(runs, reference_runs),
                "test_patches": len(np.asarray(runs[0]["labels"]).reshape(-1)),
            }
        )
    failed_counts, errors = _failures(failed)
    rows += [{"variant": variant, "seeds": 0} for variant in failed_counts if variant not in by_variant]
    table = pd.DataFrame(rows, columns=_comparison_columns(reference))
    if failed_counts:
        table.insert(2, "failed", [failed_counts.get(str(variant), 0) for variant in table["variant"]])
        table["error"] = [errors.get(str(variant), "") for variant in table["variant"]]
    known = published.published_columns(table["variant"])
    for column, after in zip(published.PUBLISHED_COLUMNS, tracking.AT_HALF_METRICS, strict=True):
        table.insert(table.columns.get_loc(after) + 1, column, known[column].to_numpy())
    return table


def _comparison_columns(reference: str) -> list[str]:
    return ["variant", "seeds", "test_accuracy", "test_accuracy_sd", "ci_low", "ci_high", "test_auc", "test_wrong",
            "test_worst", *tracking.AT_HALF_METRICS, f"mcnemar_p_vs_{reference}", "test_patches"]  # fmt: skip


def _failures(failed: Sequence[Mapping[str, Any]]) -> tuple[dict[str, int], dict[str, str]]:
    """(failed runs per variant, the first one's reason per variant)."""
    counts: dict[str, int] = {}
    errors: dict[str, str] = {}
    for run in failed:
        variant = str(run["variant"])
        counts[variant] = counts.get(variant, 0) + 1
        errors.setdefault(variant, f"seed {run.get('seed')}, run {run.get('run_id') or '?'}: {run.get('error', '')}")
    return counts, errors


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub markdown table, floats to 4 significant digits, NaN as '–' (no `tabulate` dependency)."""

    def cell(value: Any) -> str:
        if isinstance(value, float | np.floating):
            return "–" if np.isnan(value) else f"{value:.4g}"
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(str(column) for column in table.columns) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    body = ["| " + " | ".join(cell(value) for value in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def comparison_markdown(table: pd.DataFrame, *, data_source: str | None) -> str:
    """comparison.md: a note on whether the published column compares with ours, then the table."""
    sizes = table["test_patches"].dropna().unique() if "test_patches" in table.columns else []
    note = published.comparability_note(data_source, test_patches=int(sizes[0]) if len(sizes) == 1 else None)
    legend = (
        "test_accuracy, test_wrong, test_worst, McNemar: at each model's own decision threshold (chosen on "
        "validation, the one it is served with); ci_low/ci_high: 95 % Wilson interval of that test accuracy; "
        "*_at_0_5: the published definitions at 0.5 (accuracy; wrong |label − p| > 0.5, worst > 0.8), to read "
        "against published_*, the published project's figures (– where it published none)."
    )
    lost = table[table["failed"] > 0] if "failed" in table.columns else table.iloc[:0]
    failures = "".join(
        f"- **{row.variant}**: {row.failed} run(s) FAILED ({row.error})\n" for row in lost.itertuples(index=False)
    )
    if failures:
        failures = f"**Failed runs** (their rows count only the runs that finished):\n\n{failures}\n"
    text = f"**Note:** {note}\n\n{legend}\n\n{failures}{markdown_table(table)}"
    from mammo.model.backbones import BACKBONES  # Keras is loaded already where a series is compared

    if set(table["variant"]) & set(BACKBONES):  # a series with backbones: the published ones beside them
        text += "\n" + published.transfer_anchors_markdown()
    return text


def log_comparison(table: pd.DataFrame, *, reference: str = REFERENCE_VARIANT, data_source: str | None = None) -> None:
    """Log the comparison as CSV, markdown, a plot, and one `mcnemar_p_<variant>` metric per variant.

    `data_source` (the prepared dataset's source) decides what the markdown note and the plot's
    subtitle say about the published column; by default it is the active run's `data_source` param.
    """
    if data_source is None:
        data_source = tracking.active_param("data_source")
    tracking.log_dataframe(table, tracking.COMPARISON_FILE)
    tracking.log_text(comparison_markdown(table, data_source=data_source), tracking.COMPARISON_MARKDOWN)
    tracking.log_figure(plotting.plot_comparison(table, data_source=data_source), tracking.PLOT_COMPARISON)
    column = f"mcnemar_p_vs_{reference}"
    if column in table.columns:
        p_values = {
            f"{tracking.MCNEMAR_PREFIX}{variant}": float(p)
            for variant, p in zip(table["variant"], table[column], strict=True)
            if np.isfinite(p)
        }
        tracking.log_metrics(p_values)
