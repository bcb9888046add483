"""Metrics on hand-made cases whose answers are known by hand or by the textbook formula."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from mammo import tracking
from mammo.report import evaluation


def test_wilson_interval_of_80_out_of_100() -> None:
    low, high = evaluation.accuracy_interval(80, 100)
    assert low == pytest.approx(0.7112, abs=5e-4)
    assert high == pytest.approx(0.8666, abs=5e-4)


@pytest.mark.parametrize(("correct", "total"), [(0, 10), (3, 10), (283, 336), (336, 336)])
def test_wilson_interval_equals_scipy(correct: int, total: int) -> None:
    expected = binomtest(correct, total).proportion_ci(confidence_level=0.9, method="wilson")
    low, high = evaluation.accuracy_interval(correct, total, confidence=0.9)
    assert (low, high) == pytest.approx((expected.low, expected.high), abs=1e-12)


def test_wilson_interval_of_336_test_patches_is_about_four_points() -> None:
    low, high = evaluation.accuracy_interval(283, 336)  # model5's published 84.23 %
    assert 0.035 < (high - low) / 2 < 0.042


@pytest.mark.parametrize(
    ("correct", "total", "message"), [(5, 0, "between 0 and total"), (0, 0, "positive"), (11, 10, "between")]
)
def test_accuracy_interval_rejects_impossible_counts(correct: int, total: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluation.accuracy_interval(correct, total)


def test_wrong_and_worst_are_strict_at_the_margins() -> None:
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    probabilities = [0.5, 0.51, 0.8, 0.81, 0.5, 0.49, 0.2, 0.19]
    # errors: .5 .51 .8 .81 | .5 .51 .8 .81 → wrong: > .5 (6), worst: > .8 (2)
    assert evaluation.wrong_and_worst(labels, probabilities) == (6, 2)
    assert evaluation.wrong_and_worst(labels, probabilities, wrong_margin=0.79, worst_margin=0.9) == (4, 0)


def test_ece_is_zero_for_a_perfectly_calibrated_set() -> None:
    labels = [1] * 3 + [0] * 7 + [1] * 8 + [0] * 2
    probabilities = [0.3] * 10 + [0.8] * 10
    assert evaluation.expected_calibration_error(labels, probabilities) == pytest.approx(0.0, abs=1e-12)


def test_ece_of_an_over_confident_set() -> None:
    labels = [0, 1] * 10
    probabilities = [0.99] * 20  # says "calcification, surely" but half are masses
    assert evaluation.expected_calibration_error(labels, probabilities) == pytest.approx(0.49)


def test_calibration_bins_values_and_edges() -> None:
    table = evaluation.calibration_bins([0, 0, 1, 1, 1], [0.0, 0.05, 0.55, 0.65, 1.0], bins=4)
    assert list(table.columns) == ["bin", "lower", "upper", "count", "mean_probability", "fraction_positive"]
    assert table["count"].tolist() == [2, 0, 2, 1]  # p = 1.0 joins the last bin
    assert table["lower"].tolist() == [0.0, 0.25, 0.5, 0.75]
    assert table["mean_probability"].tolist()[0] == pytest.approx(0.025)
    assert table["mean_probability"].tolist()[2] == pytest.approx(0.6)
    assert math.isnan(table["mean_probability"][1]) and math.isnan(table["fraction_positive"][1])
    assert table["fraction_positive"].tolist()[3] == 1.0
    # ECE by hand: (2·|.025 − 0| + 2·|.6 − 1| + 1·|1 − 1|) / 5
    assert evaluation.calibration_error_from_bins(table) == pytest.approx((0.05 + 0.8) / 5)


def test_confusion_counts_rows_true_columns_predicted() -> None:
    labels = [0, 0, 0, 1, 1]
    probabilities = [0.1, 0.6, 0.5, 0.9, 0.2]  # 0.5 is a mass prediction (Keras: calc when p > 0.5)
    np.testing.assert_array_equal(evaluation.confusion_counts(labels, probabilities), [[2, 1], [1, 1]])
    np.testing.assert_array_equal(evaluation.confusion_counts([1, 1], [0.9, 0.8]), [[0, 0], [0, 2]])


def test_mcnemar_on_a_hand_made_discordant_table() -> None:
    labels = np.zeros(20, dtype=int)
    a = np.zeros(20)  # A right on every patch
    b = np.zeros(20)
    b[:7] = 1  # B wrong on 7 that A got right
    a[7:9] = 1  # A wrong on 2 that B got right
    p_value, only_a, only_b = evaluation.mcnemar_test(labels, a, b)
    assert (only_a, only_b) == (7, 2)
    assert p_value == pytest.approx(binomtest(7, 9, 0.5).pvalue)
    assert p_value == pytest.approx(2 * sum(math.comb(9, k) for k in range(7, 10)) / 2**9)
    assert evaluation.mcnemar_test(labels, b, a)[0] == pytest.approx(p_value)


def test_mcnemar_without_discordant_pairs_is_one_and_takes_probabilities() -> None:
    labels = [0, 1, 1, 0]
    assert evaluation.mcnemar_test(labels, [0.2, 0.9, 0.4, 0.1], [0.3, 0.7, 0.1, 0.4]) == (1.0, 0, 0)


def test_classification_metrics_names_are_the_tracking_names() -> None:
    metrics = evaluation.classification_metrics([0, 1], [0.2, 0.7])
    assert tuple(metrics) == (*tracking.TEST_METRICS, *tracking.AT_HALF_METRICS)
    ended = evaluation.classification_metrics([0, 1], [0.2, 0.7], prefix="val_", suffix=tracking.END_SUFFIX)
    assert tuple(ended) == tuple(
        f"val_{name.removeprefix('test_')}_end" for name in (*tracking.TEST_METRICS, *tracking.AT_HALF_METRICS)
    )


def test_classification_metrics_on_a_known_set() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    probabilities = np.array([0.1, 0.4, 0.6, 0.95, 0.9, 0.8, 0.7, 0.3, 0.55, 0.05])
    metrics = evaluation.classification_metrics(labels, probabilities)
    assert metrics["test_accuracy"] == pytest.approx(0.6)
    assert metrics["test_recall_mass"] == pytest.approx(0.5)  # 2 of 4 masses below 0.5
    assert metrics["test_recall_calc"] == pytest.approx(4 / 6)
    assert metrics["test_balanced_accuracy"] == pytest.approx((0.5 + 4 / 6) / 2)
    assert metrics["test_balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, probabilities > 0.5))
    assert metrics["test_auc"] == pytest.approx(roc_auc_score(labels, probabilities))
    assert metrics["test_auc"] == pytest.approx(12 / 24)  # 12 of the 24 (mass, calc) pairs ranked right
    expected_loss = -np.mean(labels * np.log(probabilities) + (1 - labels) * np.log(1 - probabilities))
    assert metrics["test_loss"] == pytest.approx(expected_loss)
    assert (metrics["test_wrong"], metrics["test_worst"]) == (4.0, 2.0)  # errors .6 .95 .7 .95 → 4 > .5, 2 > .8
    assert (metrics["test_accuracy_ci_low"], metrics["test_accuracy_ci_high"]) == evaluation.accuracy_interval(6, 10)
    assert metrics["test_ece"] == pytest.approx(evaluation.expected_calibration_error(labels, probabilities))


def test_classification_metrics_with_one_class_and_saturated_probabilities() -> None:
    metrics = evaluation.classification_metrics([1, 1, 1], [1.0, 0.0, 0.9])
    assert math.isnan(metrics["test_auc"]) and math.isnan(metrics["test_recall_mass"])
    assert metrics["test_recall_calc"] == pytest.approx(2 / 3)
    assert metrics["test_balanced_accuracy"] == pytest.approx(2 / 3)
    assert math.isfinite(metrics["test_loss"])  # p = 0 for a calcification is clipped, not infinite
    assert metrics["test_loss"] == pytest.approx((-np.log(1e-7) - np.log(0.9) - np.log(1 - 1e-7)) / 3)


@pytest.mark.parametrize(
    ("labels", "probabilities", "message"),
    [
        ([0, 1], [0.5], "labels has 2 values but probabilities has 1"),
        ([0, 2], [0.1, 0.2], "labels must be 0"),
        ([0, 1], [0.1, 1.2], "within \\[0, 1\\]"),
        ([0, 1], [0.1, float("nan")], "finite"),
        ([], [], "empty"),
    ],
)
def test_bad_inputs_name_the_problem(labels: list, probabilities: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluation.classification_metrics(labels, probabilities)


def test_predictions_table_sorted_by_index_with_errors() -> None:
    rows = pd.DataFrame({"index": [7, 2, 5], "patient_id": ["P_3", "P_1", "P_2"], "label": [1, 0, 0]})
    table = evaluation.predictions_table(rows, np.array([[0.15], [0.3], [0.55]]))  # Keras's (N, 1) shape
    assert list(table.columns) == [
        "index", "patient_id", "label", "probability", "error", "predicted", "wrong", "worst", "threshold",
    ]  # fmt: skip
    assert table["index"].tolist() == [2, 5, 7]
    assert table["patient_id"].tolist() == ["P_1", "P_2", "P_3"]
    assert table["error"].tolist() == pytest.approx([0.3, 0.55, 0.85])
    assert table["predicted"].tolist() == [0, 1, 0]
    assert table["wrong"].tolist() == [False, True, True]
    assert table["worst"].tolist() == [False, False, True]
    strict = evaluation.predictions_table(rows, np.array([0.15, 0.3, 0.55]), threshold=0.6).set_index("index")
    assert strict["predicted"].tolist() == [0, 0, 0] and strict["wrong"].tolist() == [False, False, True]
    assert (strict["threshold"] == 0.6).all()


def test_every_decision_metric_counts_at_the_models_threshold_and_the_published_ones_at_half() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    probabilities = np.array([0.1, 0.4, 0.6, 0.95, 0.9, 0.8, 0.7, 0.3, 0.55, 0.05])
    at_half = evaluation.classification_metrics(labels, probabilities)
    strict = evaluation.classification_metrics(labels, probabilities, threshold=0.75)
    # At 0.75: masses .1 .4 .6 right, .95 wrong; calcifications .9 .8 right, .7 .3 .55 .05 wrong.
    assert strict["test_accuracy"] == pytest.approx(5 / 10) and at_half["test_accuracy"] == pytest.approx(6 / 10)
    assert strict["test_recall_mass"] == pytest.approx(3 / 4) and strict["test_recall_calc"] == pytest.approx(2 / 6)
    assert (strict["test_wrong"], strict["test_worst"]) == (5.0, 2.0)  # worst: wrong and |label − p| > 0.8
    assert (strict["test_accuracy_ci_low"], strict["test_accuracy_ci_high"]) == evaluation.accuracy_interval(5, 10)
    for name in ("accuracy", "wrong", "worst"):  # the published definitions, whatever the threshold
        assert strict[f"test_{name}_at_0_5"] == at_half[f"test_{name}_at_0_5"] == at_half[f"test_{name}"]
    assert strict["test_auc"] == at_half["test_auc"] and strict["test_loss"] == at_half["test_loss"]
    selection = evaluation.select_errors(labels, probabilities, count=12, threshold=0.75)
    assert (selection.wrong_count, selection.worst_count) == (5, 2) and 6 in selection.positions  # p .7, calc
    assert evaluation.confusion_counts(labels, probabilities, threshold=0.75).tolist() == [[3, 1], [4, 2]]


def test_mcnemar_labels_each_model_at_its_own_threshold() -> None:
    labels = [1, 1, 1, 0]
    a, b = [0.6, 0.7, 0.65, 0.2], [0.6, 0.7, 0.65, 0.2]
    assert evaluation.mcnemar_test(labels, a, b) == (1.0, 0, 0)  # the same model
    _, only_a, only_b = evaluation.mcnemar_test(labels, a, b, threshold_b=0.68)  # b calls .6 and .65 mass
    assert (only_a, only_b) == (2, 0)


def test_worst_order_is_by_error_with_stable_ties() -> None:
    order = evaluation.worst_order([0, 1, 0, 1], [0.9, 0.1, 0.2, 0.9], count=3)
    assert order.tolist() == [0, 1, 2]  # errors .9 .9 .2 .1


# errors .1 .7 .95 .2 .6 .98 .3 .4: wrong (> 0.5) at 1, 2, 4, 5; worst (> 0.8) at 2, 5
PANEL_LABELS = [0, 0, 0, 1, 1, 1, 0, 1]
PANEL_PROBABILITIES = [0.1, 0.7, 0.95, 0.8, 0.4, 0.02, 0.3, 0.6]


def test_select_errors_shows_worst_first_then_wrong_and_never_a_correct_patch() -> None:
    selection = evaluation.select_errors(PANEL_LABELS, PANEL_PROBABILITIES, count=12)
    assert selection.positions.tolist() == [5, 2, 1, 4]  # 12 asked, only 4 are wrong
    assert selection.worst.tolist() == [True, True, False, False]
    assert selection.labels.tolist() == [1, 0, 0, 1]
    assert selection.probabilities.tolist() == [0.02, 0.95, 0.7, 0.4]
    assert (selection.wrong_count, selection.worst_count, selection.total) == (4, 2, 8)
    first = evaluation.select_errors(PANEL_LABELS, PANEL_PROBABILITIES, count=1)
    assert first.positions.tolist() == [5] and (first.shown_worst, first.worst_count) == (1, 2)
    with pytest.raises(ValueError, match="count must be at least 1"):
        evaluation.select_errors(PANEL_LABELS, PANEL_PROBABILITIES, count=0)


def test_correct_sample_draws_only_correct_patches_per_class_repeatably() -> None:
    labels = np.array([0] * 10 + [1] * 10)
    probabilities = np.where(labels == 1, 0.9, 0.1)
    probabilities[[0, 1, 12]] = [0.8, 0.6, 0.3]  # two masses and a calcification called wrong
    chosen = evaluation.correct_sample(labels, probabilities, per_class=3)
    assert len(chosen) == 6 and labels[chosen].tolist() == [0, 0, 0, 1, 1, 1]
    assert not set(chosen.tolist()) & {0, 1, 12}
    np.testing.assert_array_equal(evaluation.correct_sample(labels, probabilities, per_class=3), chosen)
    assert set(evaluation.correct_sample(labels, probabilities, per_class=50).tolist()) == set(range(20)) - {0, 1, 12}


def _brute_force_delong(labels: np.ndarray, probabilities: np.ndarray) -> tuple[float, float]:
    """AUC and DeLong's variance from the definition: ψ(x, y) = 1, ½, 0 over every (positive, negative) pair."""
    positives, negatives = probabilities[labels == 1], probabilities[labels == 0]
    psi = (positives[:, None] > negatives[None, :]) + 0.5 * (positives[:, None] == negatives[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return float(psi.mean()), float(v10.var(ddof=1) / len(positives) + v01.var(ddof=1) / len(negatives))


def test_auc_interval_is_delong_with_ties() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 80)
    probabilities = np.round(np.clip(0.3 * labels + rng.normal(0.35, 0.2, 80), 0, 1), 1)  # rounded: many ties
    auc, low, high = evaluation.auc_interval(labels, probabilities)
    expected_auc, variance = _brute_force_delong(labels, probabilities)
    assert auc == pytest.approx(expected_auc) == pytest.approx(roc_auc_score(labels, probabilities))
    assert (low, high) == pytest.approx((auc - 1.959964 * math.sqrt(variance), auc + 1.959964 * math.sqrt(variance)))


def test_auc_interval_is_undefined_without_both_classes() -> None:
    assert all(math.isnan(value) for value in evaluation.auc_interval([1, 1, 1], [0.2, 0.5, 0.9]))
    auc, low, high = evaluation.auc_interval([0, 0, 1], [0.2, 0.5, 0.9])  # one calcification: no variance
    assert auc == 1.0 and math.isnan(low) and math.isnan(high)


# masses 0.1 0.2 0.6; calcifications 0.4 0.5 0.7 0.9
THRESHOLD_LABELS = [0, 0, 0, 1, 1, 1, 1]
THRESHOLD_PROBABILITIES = [0.1, 0.2, 0.6, 0.4, 0.5, 0.7, 0.9]


def test_fixed_threshold_is_keras_half_and_takes_no_target() -> None:
    assert evaluation.choose_threshold(THRESHOLD_LABELS, THRESHOLD_PROBABILITIES) == 0.5
    with pytest.raises(ValueError, match="method='sensitivity' only"):
        evaluation.choose_threshold(THRESHOLD_LABELS, THRESHOLD_PROBABILITIES, target=0.9)
    with pytest.raises(ValueError, match="method must be one of"):
        evaluation.choose_threshold(THRESHOLD_LABELS, THRESHOLD_PROBABILITIES, method="f1")


def test_youden_threshold_maximises_j_and_sits_between_scores() -> None:
    threshold = evaluation.choose_threshold(THRESHOLD_LABELS, THRESHOLD_PROBABILITIES, method="youden")
    assert threshold == pytest.approx(0.3)  # all 4 calcifications, 2 of 3 masses: J = 2/3, the best cut
    point = evaluation.operating_point(THRESHOLD_LABELS, THRESHOLD_PROBABILITIES, threshold)
    assert (point["sensitivity"], point["specificity"]) == pytest.approx((1.0, 2 / 3))
    cuts = np.array([0.0, 0.15, 0.3, 0.45, 0.55, 0.65, 0.8, 1.0])  # every distinct way to split these scores
    best_j = max(
        evaluation.operating_point(THRESHOLD_LABELS, THRESHOLD_PROBABILITIES, cut)["sensitivity"]
        + evaluation.operating_point(THRESHOLD_LABELS, THRESHOLD_PROBABILITIES, cut)["specificity"]
        - 1
        for cut in cuts
    )
    assert point["sensitivity"] + point["specificity"] - 1 == pytest.approx(best_j)


@pytest.mark.parametrize(("target", "expected"), [(0.5, 0.65), (0.75, 0.45), (1.0, 0.3)])
def test_sensitivity_threshold_is_the_highest_reaching_the_target(target: float, expected: float) -> None:
    threshold = evaluation.choose_threshold(
        THRESHOLD_LABELS, THRESHOLD_PROBABILITIES, method="sensitivity", target=target
    )
    assert threshold == pytest.approx(expected)
    assert evaluation.operating_point(THRESHOLD_LABELS, THRESHOLD_PROBABILITIES, threshold)["sensitivity"] >= target
    scores = np.array(THRESHOLD_PROBABILITIES)
    next_cut = scores[scores > threshold].min()  # a threshold one score higher drops that patch
    assert evaluation.operating_point(THRESHOLD_LABELS, THRESHOLD_PROBABILITIES, next_cut)["sensitivity"] < target


def test_threshold_choice_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="both classes"):
        evaluation.choose_threshold([1, 1], [0.2, 0.7], method="youden")
    with pytest.raises(ValueError, match=r"target must be a sensitivity in \(0, 1\]"):
        evaluation.choose_threshold(THRESHOLD_LABELS, THRESHOLD_PROBABILITIES, method="sensitivity", target=1.5)


def test_operating_point_has_wilson_intervals_and_nan_for_an_absent_class() -> None:
    point = evaluation.operating_point(THRESHOLD_LABELS, THRESHOLD_PROBABILITIES, 0.5)
    assert point["threshold"] == 0.5
    assert point["sensitivity"] == pytest.approx(2 / 4)  # 0.5 is not > 0.5: Keras's rule
    assert point["specificity"] == pytest.approx(2 / 3)
    assert (point["sensitivity_ci_low"], point["sensitivity_ci_high"]) == evaluation.accuracy_interval(2, 4)
    assert (point["specificity_ci_low"], point["specificity_ci_high"]) == evaluation.accuracy_interval(2, 3)
    only_calc = evaluation.operating_point([1, 1], [0.7, 0.2])
    assert only_calc["sensitivity"] == 0.5 and math.isnan(only_calc["specificity"])
    with pytest.raises(ValueError, match="threshold must be within"):
        evaluation.operating_point([1], [0.5], 1.5)
