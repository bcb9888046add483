"""Metrics on hand-made cases whose answers are known by hand or by the textbook formula."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from mammo import evaluation, tracking


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
    assert tuple(metrics) == tracking.TEST_METRICS
    ended = evaluation.classification_metrics([0, 1], [0.2, 0.7], prefix="val_", suffix=tracking.END_SUFFIX)
    assert tuple(ended) == tuple(f"val_{name.removeprefix('test_')}_end" for name in tracking.TEST_METRICS)


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
        "index", "patient_id", "label", "probability", "error", "predicted", "wrong", "worst",
    ]  # fmt: skip
    assert table["index"].tolist() == [2, 5, 7]
    assert table["patient_id"].tolist() == ["P_1", "P_2", "P_3"]
    assert table["error"].tolist() == pytest.approx([0.3, 0.55, 0.85])
    assert table["predicted"].tolist() == [0, 1, 0]
    assert table["wrong"].tolist() == [False, True, True]
    assert table["worst"].tolist() == [False, False, True]


def test_worst_order_is_by_error_with_stable_ties() -> None:
    order = evaluation.worst_order([0, 1, 0, 1], [0.9, 0.1, 0.2, 0.9], count=3)
    assert order.tolist() == [0, 1, 2]  # errors .9 .9 .2 .1
