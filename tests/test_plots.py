"""Figures checked by the numbers drawn on their axes, not by pixels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from mammo import evaluation, plots

LABELS = np.array([0, 0, 0, 1, 1, 1, 0, 1])
PROBABILITIES = np.array([0.1, 0.7, 0.95, 0.8, 0.4, 0.02, 0.3, 0.6])


def _lines_by_label(axes) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {line.get_label(): (np.asarray(line.get_xdata()), np.asarray(line.get_ydata())) for line in axes.get_lines()}


def test_curves_plot_history_and_mark_the_best_epoch() -> None:
    history = {
        "loss": [0.9, 0.6, 0.5, 0.45],
        "val_loss": [0.8, 0.55, 0.6, 0.7],
        "accuracy": [0.5, 0.7, 0.8, 0.85],
        "val_accuracy": [0.55, 0.75, 0.7, 0.68],
        "val_auc": [0.6, 0.8, 0.78, 0.77],
        "learning_rate": [1e-3] * 4,
    }
    figure = plots.plot_curves(history, best_epoch=1)
    assert isinstance(figure, Figure)
    loss_axes, accuracy_axes, auc_axes = figure.axes
    assert [axes.get_title() for axes in figure.axes] == ["loss", "accuracy", "AUC"]
    lines = _lines_by_label(loss_axes)
    np.testing.assert_array_equal(lines["train"][0], [0, 1, 2, 3])
    np.testing.assert_allclose(lines["train"][1], history["loss"])
    np.testing.assert_allclose(lines["validation"][1], history["val_loss"])
    np.testing.assert_allclose(_lines_by_label(accuracy_axes)["validation"][1], history["val_accuracy"])
    assert "train" not in _lines_by_label(auc_axes)  # only val_auc was logged
    for axes in figure.axes:
        best_x, _ = _lines_by_label(axes)["best epoch 1"]
        np.testing.assert_array_equal(best_x, [1, 1])


def test_curves_without_val_auc_have_two_panels_and_reject_a_best_epoch_past_the_end() -> None:
    history = {"loss": [0.9, 0.6], "val_loss": [0.8, 0.7], "accuracy": [0.5, 0.6], "val_accuracy": [0.5, 0.7]}
    assert len(plots.plot_curves(history, best_epoch=0).axes) == 2
    with pytest.raises(ValueError, match="best_epoch=2 is outside the 2 epochs"):
        plots.plot_curves(history, best_epoch=2)
    with pytest.raises(ValueError, match="history has none"):
        plots.plot_curves({"learning_rate": [0.1]}, best_epoch=0)


def test_confusion_figure_shows_the_counts() -> None:
    counts = evaluation.confusion_counts(LABELS, PROBABILITIES)
    figure = plots.plot_confusion(counts)
    axes = figure.axes[0]
    np.testing.assert_array_equal(axes.get_images()[0].get_array(), counts)
    cell_texts = [text.get_text().split("\n")[0] for text in axes.texts]
    assert cell_texts == [str(value) for value in counts.ravel()]
    assert [label.get_text() for label in axes.get_yticklabels()] == ["mass", "calcification"]
    with pytest.raises(ValueError, match="2×2"):
        plots.plot_confusion(np.zeros((3, 3)))


def test_roc_figure_draws_sklearn_curve_with_auc_in_legend() -> None:
    figure = plots.plot_roc(LABELS, PROBABILITIES)
    axes = figure.axes[0]
    expected_fpr, expected_tpr, _ = roc_curve(LABELS, PROBABILITIES)
    auc = evaluation.classification_metrics(LABELS, PROBABILITIES)["test_auc"]
    curve = _lines_by_label(axes)[f"AUC = {auc:.3f}"]
    np.testing.assert_allclose(curve[0], expected_fpr)
    np.testing.assert_allclose(curve[1], expected_tpr)
    assert f"AUC = {auc:.3f}" in [text.get_text() for text in axes.get_legend().get_texts()]


def test_roc_with_one_class_says_so_instead_of_raising() -> None:
    axes = plots.plot_roc([1, 1, 1], [0.2, 0.9, 0.6]).axes[0]
    assert "undefined" in axes.get_title()


def test_calibration_figure_plots_the_filled_bins() -> None:
    bins = evaluation.calibration_bins(LABELS, PROBABILITIES, bins=5)
    figure = plots.plot_calibration(bins)
    top, bottom = figure.axes
    filled = bins[bins["count"] > 0]
    x, y = _lines_by_label(top)["model"]
    np.testing.assert_allclose(x, filled["mean_probability"])
    np.testing.assert_allclose(y, filled["fraction_positive"])
    assert [patch.get_height() for patch in bottom.patches] == bins["count"].tolist()
    assert f"ECE {evaluation.expected_calibration_error(LABELS, PROBABILITIES, bins=5):.3f}" in top.get_title()


def test_worst_panel_shows_the_worst_patches_in_order_of_error() -> None:
    patches = np.arange(len(LABELS) * 4 * 4, dtype=np.uint16).reshape(len(LABELS), 4, 4)
    figure = plots.plot_worst(patches, LABELS, PROBABILITIES, count=3)
    shown = [axes for axes in figure.axes if axes.get_images()]
    # errors: .1 .7 .95 .2 .6 .98 .3 .4 → worst first: positions 5, 2, 1
    assert len(shown) == 3
    for axes, position in zip(shown, [5, 2, 1], strict=True):
        np.testing.assert_array_equal(axes.get_images()[0].get_array(), patches[position])
    assert shown[0].get_title() == "calcification\np=0.02"
    assert shown[1].get_title() == "mass\np=0.95"


def test_samples_show_the_first_patches_of_each_class() -> None:
    patches = np.stack([np.full((4, 4), position, dtype=np.uint16) for position in range(len(LABELS))])
    figure = plots.plot_samples(patches, LABELS, per_class=2)
    shown = [int(axes.get_images()[0].get_array()[0, 0]) for axes in figure.axes if axes.get_images()]
    assert shown == [0, 1, 3, 4]  # masses 0, 1 on the first row; calcifications 3, 4 on the second
    assert len(figure.axes) == 4


def test_comparison_plot_has_accuracy_and_interval_per_variant() -> None:
    table = pd.DataFrame(
        {
            "variant": ["model0", "model5"],
            "test_accuracy": [0.73, 0.84],
            "ci_low": [0.68, 0.80],
            "ci_high": [0.77, 0.88],
        }
    )
    axes = plots.plot_comparison(table).axes[0]
    container = axes.containers[0]
    np.testing.assert_allclose(container.lines[0].get_ydata(), [0.73, 0.84])
    segments = container.lines[2][0].get_segments()
    np.testing.assert_allclose([segment[:, 1] for segment in segments], [[0.68, 0.77], [0.80, 0.88]])
    assert [label.get_text() for label in axes.get_xticklabels()] == ["model0", "model5"]
    with pytest.raises(ValueError, match="ci_low"):
        plots.plot_comparison(table.drop(columns="ci_low"))
