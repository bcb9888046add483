"""The model card a registered version carries as its description (Markdown, rendered by the registry UI).

Pure text from numbers already computed: the data, the variant and its hyperparameters, the kept
checkpoint's test figures with their 95 % interval, the gate's decision, and where the run's
plots are, so a version explains itself to whoever finds it in the registry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mammo import tracking
from mammo.core.labels import CLASS_NAMES

HYPERPARAMETERS = (
    "filters", "dense_units", "dropout", "l2", "optimizer", "learning_rate", "lr_decay", "batch_size", "epochs",
    "patience", "augment", "image_size", "standardize", "split_by", "val_fraction", "seed", "schedule", "dtype_policy",
    "backbone", "weights", "weights_file", "weights_sha256", "unfreeze_blocks", "finetune_learning_rate", "head_epochs",
)  # fmt: skip
PLOTS = (
    tracking.PLOT_CURVES, tracking.PLOT_CONFUSION, tracking.PLOT_ROC, tracking.PLOT_CALIBRATION, tracking.PLOT_WORST,
    "plots/gradcam_worst.png", "plots/gradcam_correct.png", "plots/subgroups.png",
)  # fmt: skip


def _number(metrics: Mapping[str, float], name: str, *, percent: bool = False, count: bool = False) -> str:
    value = metrics.get(name)
    if value is None or not math.isfinite(value):
        return "–"
    if count:
        return f"{value:.0f}"
    return f"{100 * value:.1f} %" if percent else f"{value:.3f}"


def model_card(
    *, model_name: str, version: str, alias: str, run_id: str, experiment_id: str, params: Mapping[str, str],
    metrics: Mapping[str, float], data: Mapping[str, Any], decision_status: str, decision_reason: str,
    p_value: float | None, against: str | None, artifacts: list[str] | tuple[str, ...] = PLOTS,
    rebaseline_from: str | None = None,
) -> str:  # fmt: skip
    """The Markdown card; `data` is the prepared dataset's dataset.json (source, digest, counts).

    `rebaseline_from` names the dataset the champion it was gated against had been trained on, when
    that was another one (a re-baseline: both models were scored on this dataset's test split).
    """
    counts = data.get("counts", {})
    count_text = "; ".join(
        f"{split}: " + ", ".join(f"{counts[split].get(label, 0)} {label}" for label in CLASS_NAMES)
        for split in ("train", "test")
        if split in counts
    )
    synthetic = data.get("source") == "synthetic"
    hyper = ", ".join(f"{name} {params[name]}" for name in HYPERPARAMETERS if params.get(name) not in (None, ""))
    accuracy = _number(metrics, "test_accuracy", percent=True)
    low, high = (_number(metrics, f"test_accuracy_ci_{end}", percent=True) for end in ("low", "high"))
    interval = "95 % CI –" if "–" in (low, high) else f"{low}–{high}"
    p_text = f", McNemar p = {p_value:.3g}" if p_value is not None and math.isfinite(p_value) else ""
    lines = [
        f"# {model_name} version {version}: {decision_status.upper()} as `{alias}`",
        "",
        f"**Gate** (against {against or 'no champion'}){p_text}: {decision_reason}.",
        "",
    ]
    if rebaseline_from:
        lines += [
            f"**Re-baseline**: the champion it was gated against was trained on another dataset ({rebaseline_from}); "
            "both models were scored on this dataset's test split, so the figures start a new baseline.",
            "",
        ]
    overlap = data.get("patients_in_both_splits", "not recorded")
    if not data.get("patients_known", True):
        overlap = "unknown (the source has no patient ids)"
    lines += [
        "## Data",
        f"- source **{data.get('source', '?')}**, prepared dataset digest `{data.get('digest', '?')}`, "
        f"{data.get('image_size', '?')} px patches",
        f"- patches: {count_text or '?'}",
        f"- patients in both official splits: {overlap}",
    ]
    if synthetic:
        lines.append("- *synthetic default data: the figures below are not comparable with the published Model 0–5.*")
    lines += [
        "",
        "## Model",
        f"- variant **{params.get('variant', '?')}**; {hyper or 'hyperparameters not logged'}",
        f"- kept checkpoint: epoch {_number(metrics, 'best_epoch', count=True)} (lowest val_loss); decision "
        f"threshold {_number(metrics, 'decision_threshold')} ({params.get('threshold', 'fixed')}, chosen on validation): "
        f"sensitivity (calcification) {_number(metrics, 'test_sensitivity', percent=True)} "
        f"({_number(metrics, 'test_sensitivity_ci_low', percent=True)}–"
        f"{_number(metrics, 'test_sensitivity_ci_high', percent=True)}), specificity "
        f"{_number(metrics, 'test_specificity', percent=True)} ({_number(metrics, 'test_specificity_ci_low', percent=True)}–"
        f"{_number(metrics, 'test_specificity_ci_high', percent=True)})",
        "",
        "## Test split (kept checkpoint)",
        "| accuracy (95 % CI) | AUC | recall mass | recall calcification | balanced accuracy | ECE | wrong | worst |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {accuracy} ({interval}) | {_number(metrics, 'test_auc')} | {_number(metrics, 'test_recall_mass', percent=True)} "
        f"| {_number(metrics, 'test_recall_calc', percent=True)} | {_number(metrics, 'test_balanced_accuracy', percent=True)} "
        f"| {_number(metrics, 'test_ece')} | {_number(metrics, 'test_wrong', count=True)} "
        f"| {_number(metrics, 'test_worst', count=True)} |",
        "",
        f"Validation (kept checkpoint): AUC {_number(metrics, 'kept_val_auc')}, accuracy "
        f"{_number(metrics, 'kept_val_accuracy', percent=True)}, loss {_number(metrics, 'kept_val_loss')}.",
        "",
        "## Run",
        f"[run {run_id}](#/experiments/{experiment_id}/runs/{run_id}); plots: "
        + ", ".join(f"[{name}](#/experiments/{experiment_id}/runs/{run_id}/artifacts/{name})" for name in artifacts),
    ]
    return "\n".join(lines) + "\n"
