"""Figures checked by the numbers drawn on their axes, not by pixels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from mammo.report import evaluation, plots

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
    figure = plots.plot_curves(history, best_epoch=2)  # 1-based, as the best_epoch metric: val_loss 0.55
    assert isinstance(figure, Figure)
    loss_axes, accuracy_axes, auc_axes = figure.axes
    assert [axes.get_title() for axes in figure.axes] == ["loss", "accuracy", "AUC"]
    lines = _lines_by_label(loss_axes)
    np.testing.assert_array_equal(lines["train"][0], [1, 2, 3, 4])  # the metrics' steps
    np.testing.assert_array_equal(lines["validation"][0], [1, 2, 3, 4])
    np.testing.assert_allclose(lines["train"][1], history["loss"])
    np.testing.assert_allclose(lines["validation"][1], history["val_loss"])
    np.testing.assert_allclose(_lines_by_label(accuracy_axes)["validation"][1], history["val_accuracy"])
    assert "train" not in _lines_by_label(auc_axes)  # only val_auc was logged
    for axes in figure.axes:
        best_x, _ = _lines_by_label(axes)["best epoch 2"]
        np.testing.assert_array_equal(best_x, [2, 2])  # on the lowest val_loss point of the curve
    assert history["val_loss"][int(best_x[0]) - 1] == min(history["val_loss"])


def test_curves_without_val_auc_have_two_panels_and_reject_a_best_epoch_past_the_end() -> None:
    history = {"loss": [0.9, 0.6], "val_loss": [0.8, 0.7], "accuracy": [0.5, 0.6], "val_accuracy": [0.5, 0.7]}
    assert len(plots.plot_curves(history, best_epoch=2).axes) == 2
    for outside in (0, 3):  # epochs are 1 and 2
        with pytest.raises(ValueError, match=f"best_epoch={outside} is outside the 2 epochs"):
            plots.plot_curves(history, best_epoch=outside)
    with pytest.raises(ValueError, match="history has none"):
        plots.plot_curves({"learning_rate": [0.1]}, best_epoch=1)


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


def _shown(figure: Figure) -> list:
    return [axes for axes in figure.axes if axes.get_images()]


def _title(figure: Figure) -> str:
    """The figure's title with its wrapping undone."""
    return " ".join(figure.get_suptitle().split())


def test_worst_panel_shows_worst_then_wrong_patches_and_says_so() -> None:
    # errors .1 .7 .95 .2 .6 .98 .3 .4: worst (> 0.8) 5, 2; wrong only (> 0.5) 1, 4; the rest correct
    patches = np.arange(len(LABELS) * 4 * 4, dtype=np.uint16).reshape(len(LABELS), 4, 4)
    selection = evaluation.select_errors(LABELS, PROBABILITIES, count=3)
    figure = plots.plot_worst(patches[selection.positions], selection)
    shown = _shown(figure)
    assert len(shown) == 3
    for axes, position in zip(shown, [5, 2, 1], strict=True):
        np.testing.assert_array_equal(axes.get_images()[0].get_array(), patches[position])
    assert [axes.get_title() for axes in shown] == [
        "calcification\np=0.02 (worst)", "mass\np=0.95 (worst)", "mass\np=0.70 (wrong, not worst)",
    ]  # fmt: skip
    assert _title(figure) == (
        "2 worst (|label − p| > 0.8) + 1 wrong, not worst (0.5 < |label − p| ≤ 0.8); "
        "4 wrong (|label − p| > 0.5) of 8 patches"
    )


def test_worst_panel_titles_count_what_is_not_shown_and_never_show_a_correct_patch() -> None:
    patches = np.zeros((len(LABELS), 4, 4), dtype=np.uint16)
    one = evaluation.select_errors(LABELS, PROBABILITIES, count=1)
    assert _title(plots.plot_worst(patches[one.positions], one)) == (
        "1 of 2 worst (|label − p| > 0.8); 4 wrong (|label − p| > 0.5) of 8 patches"
    )
    every = evaluation.select_errors(LABELS, PROBABILITIES, count=12)
    assert len(_shown(plots.plot_worst(patches[every.positions], every))) == 4  # 12 tiles asked, 4 are wrong
    right = evaluation.select_errors([0, 1], [0.2, 0.9], count=12)
    assert _title(plots.plot_worst(patches[:0], right)) == "no wrong patches (|label − p| > 0.5) among 2"
    with pytest.raises(ValueError, match="the selection shows 4"):
        plots.plot_worst(patches, every)


def test_gradcam_tiles_overlay_each_map_on_its_patch_with_label_p_and_patient() -> None:
    images = np.stack([np.full((6, 6), value, np.float32) for value in (0.1, 0.5, 0.9)])
    maps = np.random.default_rng(0).random((3, 6, 6)).astype(np.float32)
    figure = plots.plot_gradcam(
        images[..., np.newaxis], maps, labels=[0, 1, 1], probabilities=[0.9, 0.05, 0.7], title="Grad-CAM",
        patient_ids=["P_00001", "P_00002", "P_00003"], notes=["wrong", "", ""],
    )  # fmt: skip
    shown = _shown(figure)
    assert len(shown) == 3 and figure.get_suptitle() == "Grad-CAM"
    for axes, image, heatmap in zip(shown, images, maps, strict=True):
        patch_layer, heat_layer = axes.get_images()
        np.testing.assert_array_equal(patch_layer.get_array(), image)
        np.testing.assert_array_equal(heat_layer.get_array(), heatmap)
        assert heat_layer.get_alpha() < 1 and heat_layer.get_clim() == (0.0, 1.0)
    assert [axes.get_title() for axes in shown] == [
        "mass · P_00001\np=0.90\nwrong", "calcification · P_00002\np=0.05", "calcification · P_00003\np=0.70",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="must describe the same patches"):
        plots.plot_gradcam(images, maps[:2], labels=[0, 1], probabilities=[0.1, 0.2], patient_ids=["a", "b"], title="")


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
    assert not axes.collections[1:]  # no published column, no published markers
    with pytest.raises(ValueError, match="ci_low"):
        plots.plot_comparison(table.drop(columns="ci_low"))


def test_comparison_plot_marks_published_accuracy_and_says_when_data_is_synthetic() -> None:
    table = pd.DataFrame({
        "variant": ["model0", "trial7", "model5"], "test_accuracy": [0.7, 0.8, 0.9], "ci_low": [0.6, 0.7, 0.8],
        "ci_high": [0.8, 0.9, 0.95], "published_test_accuracy": [0.7292, np.nan, 0.8423],
    })  # fmt: skip
    axes = plots.plot_comparison(table, data_source="synthetic").axes[0]
    markers = [c for c in axes.collections if c.get_label() == "published"]
    np.testing.assert_allclose(markers[0].get_offsets(), [[0, 0.7292], [2, 0.8423]])  # none for trial7
    assert "synthetic" in axes.get_title() and "NOT comparable" in axes.get_title()
    assert "NOT comparable" not in plots.plot_comparison(table, data_source="cbis-ddsm").axes[0].get_title()


def test_subgroup_plot_draws_each_group_with_its_intervals() -> None:
    table = pd.DataFrame({
        "attribute": ["view", "view"], "group": ["CC", "MLO"], "n": [10, 4], "n_mass": [5, 4], "n_calc": [5, 0],
        "accuracy": [0.8, 0.5], "accuracy_ci_low": [0.5, 0.15], "accuracy_ci_high": [0.95, 0.85],
        "auc": [0.9, np.nan], "auc_ci_low": [0.7, np.nan], "auc_ci_high": [1.0, np.nan],
    })  # fmt: skip
    accuracy_axes, auc_axes = plots.plot_subgroups(table).axes
    ticks, labels = accuracy_axes.get_yticks(), accuracy_axes.get_yticklabels()
    names = {tick: label.get_text() for tick, label in zip(ticks, labels, strict=True)}
    assert names == {1: "view: CC (n=10)", 0: "view: MLO (n=4)"}  # the table's first row on top
    np.testing.assert_allclose(accuracy_axes.containers[0].lines[0].get_xdata(), [0.8, 0.5])
    np.testing.assert_allclose(accuracy_axes.containers[0].lines[0].get_ydata(), [1, 0])
    segments = accuracy_axes.containers[0].lines[2][0].get_segments()
    np.testing.assert_allclose([segment[:, 0] for segment in segments], [[0.5, 0.95], [0.15, 0.85]])
    np.testing.assert_allclose(auc_axes.containers[0].lines[0].get_xdata(), [0.9, np.nan])
    with pytest.raises(ValueError, match="subgroup_metrics"):
        plots.plot_subgroups(table.drop(columns="auc"))
