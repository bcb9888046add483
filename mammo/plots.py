"""Matplotlib figures, each built from numbers `mammo.evaluation` computed (compute, then render).

Every function returns a `Figure` made without pyplot, so no global figure state piles up over
a 500-epoch run or a 50-trial study; the caller logs it with `tracking.log_figure`. Tests read
the numbers back from the axes rather than comparing pixels.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from mammo import evaluation

CLASS_NAMES = ("mass", "calcification")
TRAIN_COLOR, VALIDATION_COLOR, BEST_COLOR = "tab:blue", "tab:orange", "tab:green"
# (panel title, train key, validation key) of the training history; absent keys are skipped.
CURVE_PANELS = (("loss", "loss", "val_loss"), ("accuracy", "accuracy", "val_accuracy"), ("AUC", "auc", "val_auc"))


def plot_curves(history: dict[str, list[float]], *, best_epoch: int) -> Figure:
    """Train vs validation loss, accuracy (and AUC when logged), the kept checkpoint marked.

    x is the 0-based epoch index, the same numbering as Keras's `on_epoch_end(epoch)` and the
    `step` of the per-epoch MLflow metrics, so `best_epoch` must use it too.
    """
    panels = [panel for panel in CURVE_PANELS if panel[1] in history or panel[2] in history]
    if not panels:
        raise ValueError(f"history has none of the keys loss/val_loss/accuracy/val_accuracy/val_auc: {sorted(history)}")
    epochs = max(len(history[key]) for _, train, val in panels for key in (train, val) if key in history)
    if not 0 <= best_epoch < epochs:
        raise ValueError(f"best_epoch={best_epoch} is outside the {epochs} epochs of history (0-based index)")
    figure = Figure(figsize=(4.5 * len(panels), 3.6), layout="constrained")
    for axes, (title, train_key, val_key) in zip(
        figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True
    ):
        for key, name, color in ((train_key, "train", TRAIN_COLOR), (val_key, "validation", VALIDATION_COLOR)):
            if key in history:
                axes.plot(np.arange(len(history[key])), history[key], label=name, color=color)
        axes.axvline(best_epoch, color=BEST_COLOR, linestyle="--", label=f"best epoch {best_epoch}")
        axes.set(title=title, xlabel="epoch", ylabel=title)
        axes.legend(fontsize="small")
    return figure


def plot_confusion(counts: np.ndarray) -> Figure:
    """The 2×2 confusion matrix with counts and row percentages (recall per class) in each cell."""
    counts = np.asarray(counts)
    if counts.shape != (2, 2):
        raise ValueError(f"counts must be the 2×2 matrix of evaluation.confusion_counts, got shape {counts.shape}")
    figure = Figure(figsize=(4.2, 3.8), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(counts, cmap="Blues")
    row_totals = counts.sum(axis=1, keepdims=True)
    for (row, column), value in np.ndenumerate(counts):
        share = value / row_totals[row, 0] if row_totals[row, 0] else float("nan")
        dark = value > counts.max() / 2
        axes.text(column, row, f"{value}\n{share:.0%}", ha="center", va="center", color="white" if dark else "black")
    axes.set(xticks=[0, 1], yticks=[0, 1], xticklabels=CLASS_NAMES, yticklabels=CLASS_NAMES)
    axes.set(xlabel="predicted", ylabel="true", title="confusion matrix")
    figure.colorbar(image, ax=axes)
    return figure


def plot_roc(labels: object, probabilities: object) -> Figure:
    """ROC curve for calcification as the positive class; AUC in the legend.

    With one class only the curve is undefined: the figure says so instead of raising, so a
    smoke run on a handful of patches still logs its report.
    """
    label_array, probability_array = evaluation.check_predictions(labels, probabilities)
    figure = Figure(figsize=(4.2, 4.0), layout="constrained")
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    if len(np.unique(label_array)) == 2:
        false_positive, true_positive, _ = roc_curve(label_array, probability_array)
        auc = roc_auc_score(label_array, probability_array)
        axes.plot(false_positive, true_positive, color=TRAIN_COLOR, label=f"AUC = {auc:.3f}")
        axes.set_title("ROC (positive: calcification)")
    else:
        axes.set_title(f"ROC undefined: only {CLASS_NAMES[label_array[0]]} present")
    axes.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.02))
    axes.legend(loc="lower right")
    return figure


def plot_calibration(bins: pd.DataFrame) -> Figure:
    """Reliability diagram from `evaluation.calibration_bins`, with the patch count per bin below."""
    filled = bins[bins["count"] > 0]
    ece = evaluation.calibration_error_from_bins(bins)
    figure = Figure(figsize=(4.2, 5.0), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    top.plot(filled["mean_probability"], filled["fraction_positive"], marker="o", color=TRAIN_COLOR, label="model")
    top.set(ylabel="fraction calcification", xlim=(0, 1), ylim=(0, 1), title=f"calibration (ECE {ece:.3f})")
    top.legend(loc="upper left", fontsize="small")
    widths = bins["upper"] - bins["lower"]
    bottom.bar(bins["lower"], bins["count"], width=widths, align="edge", color=TRAIN_COLOR, edgecolor="white")
    bottom.set(xlabel="predicted p(calcification)", ylabel="patches")
    return figure


def _image_grid(count: int, *, columns: int, panel_size: float = 1.9) -> tuple[Figure, list]:
    rows = max(1, math.ceil(count / columns))
    figure = Figure(figsize=(panel_size * columns, panel_size * rows + 0.4), layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    return figure, list(grid.flat)


def plot_worst(patches: np.ndarray, labels: object, probabilities: object, *, count: int = 12) -> Figure:
    """The `count` patches with the largest |label − p|, worst first; title: true label and p."""
    label_array, probability_array = evaluation.check_predictions(labels, probabilities)
    if len(patches) != len(label_array):
        raise ValueError(f"patches has {len(patches)} images but labels has {len(label_array)}")
    order = evaluation.worst_order(label_array, probability_array, count=count)
    figure, grid = _image_grid(len(order), columns=min(max(len(order), 1), 6))
    for axes, position in zip(grid, order, strict=False):
        axes.imshow(np.asarray(patches[position]), cmap="gray")
        axes.set_title(f"{CLASS_NAMES[label_array[position]]}\np={probability_array[position]:.2f}", fontsize=9)
    figure.suptitle(f"worst {len(order)} of {len(label_array)} (largest |label − p| first)")
    return figure


def plot_samples(patches: np.ndarray, labels: object, *, per_class: int = 4) -> Figure:
    """The first `per_class` patches of each class, one row per class, to eyeball the input."""
    label_array = np.asarray(labels).reshape(-1)
    if len(patches) != len(label_array):
        raise ValueError(f"patches has {len(patches)} images but labels has {len(label_array)}")
    figure = Figure(figsize=(1.9 * per_class, 2.0 * len(CLASS_NAMES) + 0.4), layout="constrained")
    grid = figure.subplots(len(CLASS_NAMES), per_class, squeeze=False)
    for label, row in enumerate(grid):
        positions = np.flatnonzero(label_array == label)[:per_class]
        for column, axes in enumerate(row):
            axes.axis("off")
            if column < len(positions):
                axes.imshow(np.asarray(patches[positions[column]]), cmap="gray")
                axes.set_title(f"{CLASS_NAMES[label]} #{positions[column]}", fontsize=9)
    figure.suptitle("training samples")
    return figure


def plot_comparison(table: pd.DataFrame) -> Figure:
    """Test accuracy per variant with its 95 % Wilson interval as error bars (`reports.comparison_table`)."""
    missing = [column for column in ("variant", "test_accuracy", "ci_low", "ci_high") if column not in table.columns]
    if missing:
        raise ValueError(f"comparison table lacks columns {missing}; build it with reports.comparison_table")
    positions = np.arange(len(table))
    accuracy = table["test_accuracy"].to_numpy(dtype=float)
    error = np.vstack(
        [accuracy - table["ci_low"].to_numpy(dtype=float), table["ci_high"].to_numpy(dtype=float) - accuracy]
    )
    figure = Figure(figsize=(max(4.0, 1.1 * len(table) + 1.5), 3.8), layout="constrained")
    axes = figure.subplots()
    axes.errorbar(positions, accuracy, yerr=error, fmt="o", capsize=4, color=TRAIN_COLOR)
    axes.set_xticks(positions, table["variant"].astype(str))
    axes.set(ylabel="test accuracy", title="test accuracy per variant (95 % Wilson interval)")
    axes.grid(axis="y", alpha=0.3)
    return figure
