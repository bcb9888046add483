"""Matplotlib figures, each built from numbers `mammo.report.evaluation` computed (compute, then render).

Every function returns a `Figure` made without pyplot, so no global figure state piles up over
a 500-epoch run or a 50-trial study; the caller logs it with `tracking.log_figure`. Tests read
the numbers back from the axes rather than comparing pixels.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import roc_auc_score, roc_curve

from mammo.core.labels import CLASS_NAMES
from mammo.report import evaluation, published, subgroups

TRAIN_COLOR, VALIDATION_COLOR, BEST_COLOR = "tab:blue", "tab:orange", "tab:green"
WORST_COLOR, WRONG_COLOR, PUBLISHED_COLOR = "tab:red", "tab:orange", "tab:red"
# (panel title, train key, validation key) of the training history; absent keys are skipped.
CURVE_PANELS = (("loss", "loss", "val_loss"), ("accuracy", "accuracy", "val_accuracy"), ("AUC", "auc", "val_auc"))


def plot_curves(history: dict[str, list[float]], *, best_epoch: int) -> Figure:
    """Train vs validation loss, accuracy (and AUC when logged), the kept checkpoint marked.

    Epochs are numbered from 1, as the `step` of the per-epoch MLflow metrics and the `best_epoch`
    metric are, so the plot, the metric charts and the best_epoch column all name the same epoch.
    """
    panels = [panel for panel in CURVE_PANELS if panel[1] in history or panel[2] in history]
    if not panels:
        raise ValueError(f"history has none of the keys loss/val_loss/accuracy/val_accuracy/val_auc: {sorted(history)}")
    epochs = max(len(history[key]) for _, train, val in panels for key in (train, val) if key in history)
    if not 1 <= best_epoch <= epochs:
        raise ValueError(f"best_epoch={best_epoch} is outside the {epochs} epochs of history (1-based, as the metric)")
    figure = Figure(figsize=(4.5 * len(panels), 3.6), layout="constrained")
    for axes, (title, train_key, val_key) in zip(
        figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True
    ):
        for key, name, color in ((train_key, "train", TRAIN_COLOR), (val_key, "validation", VALIDATION_COLOR)):
            if key in history:
                axes.plot(np.arange(1, len(history[key]) + 1), history[key], label=name, color=color)
        axes.axvline(best_epoch, color=BEST_COLOR, linestyle="--", label=f"best epoch {best_epoch}")
        axes.set(title=title, xlabel="epoch", ylabel=title)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
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


def _suptitle(figure: Figure, text: str) -> None:
    """A figure title wrapped to the figure's width (about 11 characters per inch at this size)."""
    width = max(30, int(figure.get_figwidth() * 11))
    figure.suptitle("\n".join(textwrap.fill(line, width) for line in text.splitlines()), fontsize=9)


def _image_grid(count: int, *, columns: int, panel_size: float = 1.9) -> tuple[Figure, list]:
    rows = max(1, math.ceil(count / columns))
    figure = Figure(figsize=(panel_size * columns, panel_size * rows + 0.4), layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    return figure, list(grid.flat)


def plot_worst(patches: np.ndarray, selection: evaluation.ErrorSelection) -> Figure:
    """The patches `evaluation.select_errors` chose, worst first; the title states the published counts.

    `patches` are the chosen ones, in `selection.positions` order. Worst tiles (|label − p| > 0.8)
    are framed red; when fewer than the tile count are worst, the next wrong ones follow, framed
    orange and titled "wrong, not worst", so no tile claims more than the definitions say.
    """
    if len(patches) != len(selection.positions):
        raise ValueError(f"patches has {len(patches)} images but the selection shows {len(selection.positions)}")
    figure, grid = _image_grid(len(selection.positions), columns=min(max(len(selection.positions), 1), 6))
    tiles = zip(patches, selection.labels, selection.probabilities, selection.worst, strict=True)
    for axes, (patch, label, probability, worst) in zip(grid, tiles, strict=False):
        axes.imshow(np.asarray(patch), cmap="gray")
        kind = "worst" if worst else "wrong, not worst"
        axes.set_title(f"{CLASS_NAMES[label]}\np={probability:.2f} ({kind})", fontsize=8)
        _frame(axes, WORST_COLOR if worst else WRONG_COLOR)
    if not len(selection.positions):
        grid[0].text(0.5, 0.5, "no wrong patches", ha="center", va="center", transform=grid[0].transAxes)
    _suptitle(figure, error_title(selection))
    return figure


def error_title(selection: evaluation.ErrorSelection) -> str:
    """E.g. "12 worst (|label − p| > 0.8); 53 wrong (|label − p| > 0.5) of 336 patches", true to what is shown.

    At a threshold other than 0.5, "wrong" is said as what it is: misclassified at that threshold.
    """
    at_half = selection.threshold == evaluation.DEFAULT_THRESHOLD
    wrong_rule = "|label − p| > 0.5" if at_half else f"misclassified at threshold {selection.threshold:.3g}"
    if not len(selection.positions):
        return f"no wrong patches ({wrong_rule}) among {selection.total}"
    shown_worst = selection.shown_worst
    shown_wrong = len(selection.positions) - shown_worst
    worst = f"{shown_worst}" if shown_worst == selection.worst_count else f"{shown_worst} of {selection.worst_count}"
    title = f"{worst} worst (|label − p| > 0.8)" if at_half else f"{worst} worst (wrong, |label − p| > 0.8)"
    if shown_wrong:
        title += f" + {shown_wrong} wrong, not worst ({'0.5 < ' if at_half else ''}|label − p| ≤ 0.8)"
    return f"{title}; {selection.wrong_count} wrong ({wrong_rule}) of {selection.total} patches"


def _frame(axes, color: str) -> None:
    """A coloured border on an image tile (axis('off') hides the spines, so turn them back on)."""
    axes.axis("on")
    axes.set(xticks=[], yticks=[])
    for spine in axes.spines.values():
        spine.set(color=color, linewidth=2.5)


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


def plot_gradcam(
    images: np.ndarray, heatmaps: np.ndarray, *, labels: object, probabilities: object, patient_ids: object,
    title: str, notes: object = None, columns: int = 6,
) -> Figure:  # fmt: skip
    """Each patch in grey with its Grad-CAM map (`saliency.gradcam`, [0, 1]) overlaid in 'jet'.

    Tile title: true class, patient id, P(calcification) and an optional note (e.g. "wrong, not
    worst"). Images and maps must share their (H, W): the maps are computed at the input size.
    """
    image_array = np.asarray(images, dtype=np.float32)
    if image_array.ndim == 4 and image_array.shape[-1] == 1:
        image_array = image_array[..., 0]  # (n, H, W)
    maps = np.asarray(heatmaps, dtype=np.float32)
    label_array = np.asarray(labels, dtype=np.int64).reshape(-1)
    probability_array = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    patients = [str(patient) for patient in np.asarray(patient_ids, dtype=object).reshape(-1)]
    tile_notes = [""] * len(maps) if notes is None else [str(note) for note in notes]
    counts = {len(label_array), len(probability_array), len(patients), len(tile_notes), len(maps)}
    if image_array.shape != maps.shape or len(counts) != 1:
        raise ValueError(
            f"images {image_array.shape}, heatmaps {maps.shape}, {len(label_array)} labels, {len(probability_array)} "
            f"probabilities, {len(patients)} patient ids and {len(tile_notes)} notes must describe the same patches"
        )
    figure, grid = _image_grid(len(maps), columns=min(max(len(maps), 1), columns))
    for axes, image, heatmap, label, probability, patient, note in zip(
        grid, image_array, maps, label_array, probability_array, patients, tile_notes, strict=False
    ):
        axes.imshow(image, cmap="gray")
        axes.imshow(heatmap, cmap="jet", alpha=0.4, vmin=0.0, vmax=1.0)
        axes.set_title(
            f"{CLASS_NAMES[label]} · {patient}\np={probability:.2f}" + (f"\n{note}" if note else ""), fontsize=8
        )
    if not len(maps):
        grid[0].text(0.5, 0.5, "no patches to show", ha="center", va="center", transform=grid[0].transAxes)
    _suptitle(figure, title)
    return figure


def plot_comparison(table: pd.DataFrame, *, data_source: str | None = None) -> Figure:
    """Our test accuracy per variant with its 95 % Wilson interval, the published one beside it (×).

    The published markers come from the table's `published_test_accuracy` column
    (`reports.comparison_table`); the subtitle says whether `data_source` makes them comparable.
    """
    missing = [column for column in ("variant", "test_accuracy", "ci_low", "ci_high") if column not in table.columns]
    if missing:
        raise ValueError(f"comparison table lacks columns {missing}; build it with reports.comparison_table")
    positions = np.arange(len(table))
    accuracy = table["test_accuracy"].to_numpy(dtype=float)
    error = np.vstack(
        [accuracy - table["ci_low"].to_numpy(dtype=float), table["ci_high"].to_numpy(dtype=float) - accuracy]
    )
    figure = Figure(figsize=(max(5.0, 1.1 * len(table) + 1.5), 4.0), layout="constrained")
    axes = figure.subplots()
    axes.errorbar(positions, accuracy, yerr=error, fmt="o", capsize=4, color=TRAIN_COLOR, label="ours (95 % Wilson)")
    title = "test accuracy per variant"
    if "published_test_accuracy" in table.columns:
        published_accuracy = table["published_test_accuracy"].to_numpy(dtype=float)
        known = np.isfinite(published_accuracy)
        axes.scatter(
            positions[known], published_accuracy[known], marker="x", s=60, color=PUBLISHED_COLOR, zorder=3,
            label="published",
        )  # fmt: skip
        title += "\n" + published.comparability_subtitle(data_source)
    elif data_source is not None:
        title += "\n" + published.comparability_subtitle(data_source)
    axes.set_xticks(positions, table["variant"].astype(str))
    axes.set(ylabel="test accuracy")
    axes.set_title(title, fontsize=9)
    axes.legend(loc="lower right", fontsize="small")
    axes.grid(axis="y", alpha=0.3)
    return figure


def plot_subgroups(table: pd.DataFrame) -> Figure:
    """Accuracy and AUC with their 95 % intervals per subgroup (`subgroups.subgroup_metrics`), a forest plot.

    One row per (attribute, group), labelled with its n; a missing AUC (one class only) leaves its
    row empty in the AUC panel. Dotted lines: 0.5, chance for AUC and for a balanced accuracy.
    """
    missing = [column for column in subgroups.COLUMNS if column not in table.columns]
    if missing:
        raise ValueError(f"subgroup table lacks columns {missing}; build it with subgroups.subgroup_metrics")
    rows = np.arange(len(table))[::-1]  # first row on top
    names = [f"{attribute.replace('_', ' ')}: {group} (n={n})" for attribute, group, n in zip(
        table["attribute"], table["group"], table["n"], strict=True
    )]  # fmt: skip
    figure = Figure(figsize=(8.5, 0.32 * len(table) + 1.4), layout="constrained")
    accuracy_axes, auc_axes = figure.subplots(1, 2, sharey=True)
    for axes, metric in ((accuracy_axes, "accuracy"), (auc_axes, "auc")):
        value = table[metric].to_numpy(dtype=float)
        # Clipped at 0: an interval's rounded end can sit a hair inside its point (1.0 vs 0.9999999).
        low = np.clip(np.nan_to_num(value - table[f"{metric}_ci_low"].to_numpy(dtype=float)), 0, None)
        high = np.clip(np.nan_to_num(table[f"{metric}_ci_high"].to_numpy(dtype=float) - value), 0, None)
        axes.errorbar(value, rows, xerr=np.vstack([low, high]), fmt="o", capsize=3, color=TRAIN_COLOR)
        axes.axvline(0.5, color="grey", linestyle=":")
        axes.set(xlim=(0, 1.02), xlabel=f"{metric if metric == 'accuracy' else 'AUC'} (95 % CI)")
        axes.grid(axis="x", alpha=0.3)
    accuracy_axes.set_yticks(rows, names, fontsize=8)
    figure.suptitle("test metrics per subgroup (accuracy: Wilson, AUC: DeLong)", fontsize=10)
    return figure
