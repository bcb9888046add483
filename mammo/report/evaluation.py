"""Metrics for a binary mass (0) vs calcification (1) classifier: pure numpy, scikit-learn, scipy.

Everything here takes labels and predicted probabilities of calcification and returns numbers or
small tables, so the same values feed MLflow metrics, the plots and the tests (compute, then
render). No MLflow: `mammo.report.reports` logs what these functions compute.

A prediction is calcification when p > the model's threshold (`mammo.core.decision`: chosen on
validation and stored with the model; 0.5, Keras's `binary_accuracy` rule, by default), and every
decision metric (accuracy, recalls, wrong/worst, confusion, McNemar) is counted at that threshold:
the rule the served model applies. "Wrong" is a patch misclassified at the threshold, "worst" a
wrong one with |label − p| > 0.8. The published analysis's own figures (accuracy at 0.5, wrong
|label − p| > 0.5, worst > 0.8) are reported beside them as `*_at_0_5` for the published comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import binomtest, norm, rankdata
from sklearn.metrics import confusion_matrix, log_loss, roc_auc_score, roc_curve

from mammo.core.decision import DEFAULT_THRESHOLD, predict_labels

__all__ = ["DEFAULT_THRESHOLD", "predict_labels"]  # re-exported: the rule lives in mammo.core.decision

WRONG_MARGIN, WORST_MARGIN = 0.5, 0.8  # the published analysis: wrong |label − p| > 0.5, worst > 0.8
LOSS_EPSILON = 1e-7  # Keras's backend epsilon: log loss stays finite for p ∈ {0, 1}


def check_predictions(labels: object, probabilities: object) -> tuple[np.ndarray, np.ndarray]:
    """Labels as int 0/1 and probabilities as float in [0, 1], same length, not empty; else ValueError."""
    label_array = np.asarray(labels).reshape(-1)
    probability_array = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if len(label_array) != len(probability_array):
        raise ValueError(
            f"labels has {len(label_array)} values but probabilities has {len(probability_array)}; "
            "pass one probability per labelled patch."
        )
    if len(label_array) == 0:
        raise ValueError("labels and probabilities are empty: there is nothing to evaluate.")
    if not np.isin(label_array, (0, 1)).all():
        raise ValueError(f"labels must be 0 (mass) or 1 (calcification), got values {np.unique(label_array)[:5]}")
    if not (np.isfinite(probability_array).all() and (probability_array >= 0).all() and (probability_array <= 1).all()):
        raise ValueError(
            "probabilities must be finite and within [0, 1] (the sigmoid output), "
            f"got min {np.nanmin(probability_array)} max {np.nanmax(probability_array)}"
        )
    return label_array.astype(np.int64), probability_array


def wilson_interval(proportion: float, total: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion observed on `total` trials.

    Takes a proportion rather than a count so a mean accuracy over seeds (not an integer number
    of correct patches) gets the interval its test-set size implies. Equal to scipy's
    `binomtest(k, n).proportion_ci(method="wilson")` when proportion = k/n.
    """
    if total <= 0:
        raise ValueError(f"total must be a positive number of predictions, got {total}")
    if not 0 <= proportion <= 1:
        raise ValueError(f"proportion must be within [0, 1], got {proportion}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 exclusive (e.g. 0.95), got {confidence}")
    z = norm.ppf(1 - (1 - confidence) / 2)
    denominator = 1 + z**2 / total
    center = (proportion + z**2 / (2 * total)) / denominator
    half_width = z / denominator * np.sqrt(proportion * (1 - proportion) / total + z**2 / (4 * total**2))
    return float(max(0.0, center - half_width)), float(min(1.0, center + half_width))


def accuracy_interval(correct: int, total: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson interval of `correct / total`: with 336 test patches it is about ±4 points.

    Wilson rather than the normal approximation because it stays inside [0, 1] and keeps its
    coverage near 0 and 1, where tiny test sets in the tests and smoke runs land.
    """
    if not 0 <= correct <= total:
        raise ValueError(f"correct must be between 0 and total={total}, got {correct}")
    return wilson_interval(correct / total if total else 0.0, total, confidence=confidence)


def auc_interval(labels: object, probabilities: object, *, confidence: float = 0.95) -> tuple[float, float, float]:
    """(AUC, low, high): DeLong's variance (DeLong et al. 1988, in Sun & Xu's 2014 midrank form).

    DeLong because it is the field's standard for one AUC (pROC's default) and needs no resampling.
    The interval is AUC ± z·SE clipped to [0, 1]; with a perfect separation the variance is 0 and so
    is the width (the method's known optimism at the edge). NaN where a class is missing, and the
    interval is NaN where a class has a single patch (its variance is undefined).
    """
    label_array, probability_array = check_predictions(labels, probabilities)
    positives, negatives = probability_array[label_array == 1], probability_array[label_array == 0]
    m, n = len(positives), len(negatives)
    if m == 0 or n == 0:
        return float("nan"), float("nan"), float("nan")
    pooled = rankdata(np.concatenate([positives, negatives]))  # midranks
    auc = (pooled[:m].sum() - m * (m + 1) / 2) / (m * n)
    if m < 2 or n < 2:
        return float(auc), float("nan"), float("nan")
    positive_placements = (pooled[:m] - rankdata(positives)) / n  # share of negatives each positive beats
    negative_placements = 1 - (pooled[m:] - rankdata(negatives)) / m
    variance = positive_placements.var(ddof=1) / m + negative_placements.var(ddof=1) / n
    half_width = norm.ppf(1 - (1 - confidence) / 2) * np.sqrt(variance)
    return float(auc), float(max(0.0, auc - half_width)), float(min(1.0, auc + half_width))


def wrong_and_worst(
    labels: object, probabilities: object, *, wrong_margin: float = WRONG_MARGIN, worst_margin: float = WORST_MARGIN
) -> tuple[int, int]:
    """Counts of |label − p| > wrong_margin and > worst_margin, as the published analysis did."""
    label_array, probability_array = check_predictions(labels, probabilities)
    error = np.abs(label_array - probability_array)
    return int((error > wrong_margin).sum()), int((error > worst_margin).sum())


def misclassified(
    labels: object, probabilities: object, *, threshold: float = DEFAULT_THRESHOLD
) -> tuple[np.ndarray, np.ndarray]:
    """(wrong, worst) per patch at the model's threshold: misclassified, and misclassified with |label − p| > 0.8."""
    label_array, probability_array = check_predictions(labels, probabilities)
    wrong = predict_labels(probability_array, threshold=threshold) != label_array
    return wrong, wrong & (np.abs(label_array - probability_array) > WORST_MARGIN)


def worst_order(labels: object, probabilities: object, *, count: int | None = None) -> np.ndarray:
    """Positions sorted by |label − p|, largest first (ties keep their order); the worst panel's order."""
    label_array, probability_array = check_predictions(labels, probabilities)
    order = np.argsort(-np.abs(label_array - probability_array), kind="stable")
    return order if count is None else order[:count]


@dataclass(frozen=True)
class ErrorSelection:
    """The patches a "worst" panel shows, and the counts its title must state."""

    positions: np.ndarray  # into the evaluated arrays, largest |label − p| first; only wrong patches
    labels: np.ndarray  # of the shown patches
    probabilities: np.ndarray  # of the shown patches
    worst: np.ndarray  # bool per shown patch: |label − p| > worst margin (False: wrong but not worst)
    wrong_count: int  # of all evaluated patches
    worst_count: int
    total: int
    threshold: float = DEFAULT_THRESHOLD  # the decision threshold "wrong" is counted at

    @property
    def shown_worst(self) -> int:
        return int(self.worst.sum())


def select_errors(
    labels: object, probabilities: object, *, count: int, threshold: float = DEFAULT_THRESHOLD
) -> ErrorSelection:
    """Up to `count` wrong patches, worst first; only when fewer than `count` are worst, the next wrong ones.

    A patch on the right side of the model's threshold is never shown, however close it came: the
    panel and its title count what the model's rule calls wrong (and worst: wrong with |label − p| >
    0.8), not a top-k of errors.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1 patch, got {count}")
    label_array, probability_array = check_predictions(labels, probabilities)
    error = np.abs(label_array - probability_array)
    wrong, worst = misclassified(label_array, probability_array, threshold=threshold)
    order = worst_order(label_array, probability_array)
    shown = order[wrong[order]][:count]
    return ErrorSelection(
        positions=shown, labels=label_array[shown], probabilities=probability_array[shown],
        worst=error[shown] > WORST_MARGIN, wrong_count=int(wrong.sum()), worst_count=int(worst.sum()),
        total=len(label_array), threshold=float(threshold),
    )  # fmt: skip


def correct_sample(
    labels: object, probabilities: object, *, per_class: int, seed: int = 0, threshold: float = DEFAULT_THRESHOLD
) -> np.ndarray:
    """Positions of up to `per_class` correctly classified patches of each class, mass first.

    Drawn at random with a fixed seed rather than the most confident ones, so the panel shows what
    a typical correct decision looks at; the same predictions always give the same patches.
    """
    label_array, probability_array = check_predictions(labels, probabilities)
    correct = predict_labels(probability_array, threshold=threshold) == label_array
    rng = np.random.default_rng(seed)
    chosen = []
    for label in (0, 1):
        candidates = np.flatnonzero(correct & (label_array == label))
        picked = rng.choice(candidates, size=min(per_class, len(candidates)), replace=False)
        chosen.append(np.sort(picked))
    return np.concatenate(chosen).astype(np.int64)


def calibration_bins(labels: object, probabilities: object, *, bins: int = 10) -> pd.DataFrame:
    """Equal-width bins of p(calcification): count, mean p and fraction of calcifications per bin.

    Binned on the positive-class probability (scikit-learn's `calibration_curve` convention),
    so a point on the diagonal means "of the patches scored p, a fraction p were calcifications".
    Empty bins keep their row with count 0 and NaN means, so every table has `bins` rows.
    """
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    label_array, probability_array = check_predictions(labels, probabilities)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.minimum((probability_array * bins).astype(np.int64), bins - 1)  # p = 1.0 joins the last bin
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_probability = np.bincount(which, weights=probability_array, minlength=bins) / counts
        fraction_positive = np.bincount(which, weights=label_array, minlength=bins) / counts
    return pd.DataFrame(
        {
            "bin": np.arange(bins),
            "lower": edges[:-1],
            "upper": edges[1:],
            "count": counts,
            "mean_probability": np.where(counts > 0, mean_probability, np.nan),
            "fraction_positive": np.where(counts > 0, fraction_positive, np.nan),
        }
    )


def expected_calibration_error(labels: object, probabilities: object, *, bins: int = 10) -> float:
    """Σ_b (n_b / N) · |mean p_b − fraction of calcifications_b| over `calibration_bins`."""
    return calibration_error_from_bins(calibration_bins(labels, probabilities, bins=bins))


def calibration_error_from_bins(bins: pd.DataFrame) -> float:
    """The ECE of a `calibration_bins` table, so the reliability plot's title needs no raw data."""
    filled = bins[bins["count"] > 0]
    if filled.empty:
        return float("nan")
    gaps = (filled["mean_probability"] - filled["fraction_positive"]).abs()
    return float((filled["count"] * gaps).sum() / filled["count"].sum())


def confusion_counts(labels: object, probabilities: object, *, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """2×2 counts, rows true (mass, calcification), columns predicted; both classes always present."""
    label_array, probability_array = check_predictions(labels, probabilities)
    return confusion_matrix(label_array, predict_labels(probability_array, threshold=threshold), labels=[0, 1])


def mcnemar_test(
    labels: object, predictions_a: object, predictions_b: object, *, threshold_a: float = DEFAULT_THRESHOLD,
    threshold_b: float = DEFAULT_THRESHOLD,
) -> tuple[float, int, int]:  # fmt: skip
    """Exact McNemar test of two classifiers scored on the same patches: (p_value, b, c).

    b counts patches A got right and B wrong, c the reverse; under "equally accurate" each
    discordant patch is a fair coin, so p is the two-sided exact binomial p of b in b + c. The
    exact form rather than the chi-square one because discordant counts between neighbouring
    variants are small. Predictions may be 0/1 labels (at the default 0.5) or probabilities, each
    model's thresholded at its own threshold.
    """
    label_array, a_array = check_predictions(labels, predictions_a)
    _, b_array = check_predictions(label_array, predictions_b)
    a_correct = predict_labels(a_array, threshold=threshold_a) == label_array
    b_correct = predict_labels(b_array, threshold=threshold_b) == label_array
    only_a = int((a_correct & ~b_correct).sum())
    only_b = int((~a_correct & b_correct).sum())
    if only_a + only_b == 0:
        return 1.0, 0, 0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue), only_a, only_b


def _recall(label_array: np.ndarray, predicted: np.ndarray, label: int) -> float:
    rows = label_array == label
    return float((predicted[rows] == label).mean()) if rows.any() else float("nan")


def classification_metrics(
    labels: object, probabilities: object, *, prefix: str = "test_", suffix: str = "",
    threshold: float = DEFAULT_THRESHOLD,
) -> dict[str, float]:  # fmt: skip
    """Every final metric of one evaluation, named `{prefix}{name}{suffix}` (tracking.TEST_METRICS, AT_HALF_METRICS).

    The decision metrics are counted at `threshold`, the model's own; `accuracy_at_0_5`,
    `wrong_at_0_5` and `worst_at_0_5` are the published analysis's definitions at 0.5, for the
    published comparison. Metrics undefined on the data (AUC or a recall when one class is absent)
    are NaN rather than an error, so a smoke run on a handful of patches still logs the rest.
    """
    label_array, probability_array = check_predictions(labels, probabilities)
    predicted = predict_labels(probability_array, threshold=threshold)
    correct = int((predicted == label_array).sum())
    low, high = accuracy_interval(correct, len(label_array))
    recall_mass, recall_calc = _recall(label_array, predicted, 0), _recall(label_array, predicted, 1)
    wrong_patches, worst_patches = misclassified(label_array, probability_array, threshold=threshold)
    wrong_at_half, worst_at_half = wrong_and_worst(label_array, probability_array)
    clipped = np.clip(probability_array, LOSS_EPSILON, 1 - LOSS_EPSILON)
    both_classes = len(np.unique(label_array)) == 2
    values = {
        "accuracy": correct / len(label_array),
        "accuracy_ci_low": low,
        "accuracy_ci_high": high,
        "auc": roc_auc_score(label_array, probability_array) if both_classes else float("nan"),
        "loss": log_loss(label_array, clipped, labels=[0, 1]),
        "balanced_accuracy": float(np.nanmean([recall_mass, recall_calc])),  # sklearn's, over present classes
        "recall_mass": recall_mass,
        "recall_calc": recall_calc,
        "wrong": int(wrong_patches.sum()),
        "worst": int(worst_patches.sum()),
        "ece": expected_calibration_error(label_array, probability_array),
        "accuracy_at_0_5": float((predict_labels(probability_array) == label_array).mean()),
        "wrong_at_0_5": wrong_at_half,
        "worst_at_0_5": worst_at_half,
    }
    return {f"{prefix}{name}{suffix}": float(value) for name, value in values.items()}


def predictions_table(
    manifest_rows: pd.DataFrame, probabilities: object, *, threshold: float = DEFAULT_THRESHOLD
) -> pd.DataFrame:
    """One row per evaluated patch: who it is, what the model said (at its threshold) and how far off it was."""
    missing = [column for column in ("index", "patient_id", "label") if column not in manifest_rows.columns]
    if missing:
        raise ValueError(f"manifest_rows lacks columns {missing}; pass rows of the prepared manifest.csv")
    label_array, probability_array = check_predictions(manifest_rows["label"].to_numpy(), probabilities)
    wrong, worst = misclassified(label_array, probability_array, threshold=threshold)
    table = pd.DataFrame(
        {
            "index": manifest_rows["index"].to_numpy(),
            "patient_id": manifest_rows["patient_id"].to_numpy(),
            "label": label_array,
            "probability": probability_array,
            "error": np.abs(label_array - probability_array),
            "predicted": predict_labels(probability_array, threshold=threshold),
            "wrong": wrong,
            "worst": worst,
            "threshold": float(threshold),
        }
    )
    return table.sort_values("index", kind="stable").reset_index(drop=True)


THRESHOLD_METHODS = ("fixed", "youden", "sensitivity")


def choose_threshold(
    labels: object, probabilities: object, *, method: str = "fixed", target: float | None = None
) -> float:
    """The decision threshold t (calcification when p > t), chosen on validation predictions.

    fixed: 0.5, Keras's rule. youden: the ROC point maximising Youden's J = sensitivity + specificity
    − 1 (sklearn's `roc_curve`). sensitivity: the highest threshold whose calcification sensitivity
    reaches `target` (highest, so specificity is given up no more than needed). roc_curve's thresholds
    are inclusive (p ≥ s); the returned t lies midway to the next lower score, so `p > t` makes the
    same calls on these data and sits in the gap between scores rather than on one.
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"method must be one of {THRESHOLD_METHODS}, got {method!r}")
    if (target is not None) != (method == "sensitivity"):
        raise ValueError(
            f"target (a calcification sensitivity in (0, 1]) goes with method='sensitivity' only; got {method=!r}, "
            f"{target=!r}"
        )
    if method == "fixed":
        return DEFAULT_THRESHOLD
    label_array, probability_array = check_predictions(labels, probabilities)
    if len(np.unique(label_array)) < 2:
        raise ValueError(f"method={method!r} needs both classes among the validation labels; use method='fixed'.")
    false_positive, true_positive, thresholds = roc_curve(label_array, probability_array, drop_intermediate=False)
    if method == "youden":
        index = int(np.argmax(true_positive - false_positive))
    else:
        if not 0 < target <= 1:  # type: ignore[operator]
            raise ValueError(f"target must be a sensitivity in (0, 1], got {target}")
        index = int(np.argmax(true_positive >= target))
    return _strict_threshold(probability_array, float(thresholds[index]))


def _strict_threshold(scores: np.ndarray, inclusive: float) -> float:
    """A t with (p > t) ⇔ (p ≥ inclusive) on `scores`: midway to the next lower score."""
    if not np.isfinite(inclusive):  # roc_curve's first point: nothing called calcification
        return 1.0
    below = scores[scores < inclusive]
    if below.size == 0:
        return float(np.nextafter(inclusive, -np.inf))
    return float((inclusive + below.max()) / 2)


def operating_point(labels: object, probabilities: object, threshold: float = DEFAULT_THRESHOLD) -> dict[str, float]:
    """Sensitivity (calcification recall) and specificity (mass recall) at `threshold`, with Wilson 95 % CIs.

    NaN for a class that is absent. Named without a prefix; the caller adds `test_`/`val_`.
    """
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be within [0, 1], got {threshold}")
    label_array, probability_array = check_predictions(labels, probabilities)
    predicted = predict_labels(probability_array, threshold=threshold)
    values = {"threshold": float(threshold)}
    for name, label in (("sensitivity", 1), ("specificity", 0)):
        rows = label_array == label
        correct, total = int((predicted[rows] == label).sum()), int(rows.sum())
        low, high = accuracy_interval(correct, total) if total else (float("nan"), float("nan"))
        values |= {name: correct / total if total else float("nan"), f"{name}_ci_low": low, f"{name}_ci_high": high}
    return values
