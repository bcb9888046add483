"""The promotion gate: is a candidate better than the champion on the same test patches?

Strictly better on the gate metric by at least `min_delta`, and not significantly worse by an
exact McNemar test on the paired right/wrong outcomes. Pure numbers in, a `GateDecision` out (its
`tags()` are what the registry writes on the model version); `mammo.registry.versions` does the MLflow side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mammo import tracking
from mammo.core.errors import ConfigError
from mammo.report import evaluation

STATUS_TAG = "validation_status"
PROMOTED = "promoted"
REJECTED = "rejected"
LOWER_IS_BETTER = frozenset({"test_loss", "test_wrong", "test_worst", "test_ece", "loss", "val_loss"})
GATE_METRICS = tracking.TEST_METRICS


@dataclass(frozen=True)
class GateDecision:
    """The outcome of scoring candidate vs champion on the same patches."""

    promoted: bool
    reason: str
    gate_metric: str
    candidate_score: float
    champion_score: float | None = None
    p_value: float | None = None
    candidate_only_right: int = 0  # McNemar's discordant pairs
    champion_only_right: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return PROMOTED if self.promoted else REJECTED

    def tags(self) -> dict[str, str]:
        tags = {
            STATUS_TAG: self.status,
            "gate_metric": self.gate_metric,
            "gate_candidate_score": f"{self.candidate_score:.6g}",
            "gate_reason": self.reason,
            **self.extra,
        }
        if self.champion_score is not None:
            tags["gate_champion_score"] = f"{self.champion_score:.6g}"
        if self.p_value is not None:
            tags["mcnemar_p"] = f"{self.p_value:.6g}"
            tags["mcnemar_candidate_only_right"] = str(self.candidate_only_right)
            tags["mcnemar_champion_only_right"] = str(self.champion_only_right)
        return tags


def lower_is_better(metric: str) -> bool:
    return metric in LOWER_IS_BETTER or metric.endswith("_loss")


def check_gate_options(*, gate_metric: str, min_delta: float, alpha: float) -> None:
    if gate_metric not in GATE_METRICS:
        raise ConfigError(f"--gate-metric must be one of {', '.join(GATE_METRICS)}; got {gate_metric!r}.")
    if not np.isfinite(min_delta) or min_delta < 0:
        raise ConfigError(f"--min-delta must be a finite number >= 0 (0 = any improvement), got {min_delta}.")
    if not 0 < alpha < 1:
        raise ConfigError(f"--alpha must be between 0 and 1 (e.g. 0.05), got {alpha}.")


def _score(labels: np.ndarray, probabilities: np.ndarray, gate_metric: str, who: str, threshold: float) -> float:
    value = evaluation.classification_metrics(labels, probabilities, threshold=threshold)[gate_metric]
    if not np.isfinite(value):
        raise ConfigError(
            f"{gate_metric} of the {who} is undefined on these test patches (e.g. AUC with one class only); "
            "choose another --gate-metric such as test_accuracy, or pass --data with both classes in its test split."
        )
    return value


def gate_decision(
    *, labels: object, candidate_probabilities: object, champion_probabilities: object | None, gate_metric: str,
    min_delta: float = 0.0, alpha: float = 0.05, candidate_threshold: float = evaluation.DEFAULT_THRESHOLD,
    champion_threshold: float = evaluation.DEFAULT_THRESHOLD,
) -> GateDecision:  # fmt: skip
    """Promote when the candidate is strictly better by >= min_delta and not significantly worse.

    Each model is judged by the rule it is served with: its own stored decision threshold labels
    the patches for the gate metric and for McNemar's right/wrong pairs.

    "Better" is strict even with min_delta 0: a tie keeps the incumbent, so retraining the same
    model never churns the alias. "Significantly worse" is an exact McNemar test on the paired
    right/wrong outcomes at level `alpha`, with the champion right more often on the discordant
    patches; it guards metrics (AUC, loss, ECE) that can improve while more patches go wrong.
    """
    check_gate_options(gate_metric=gate_metric, min_delta=min_delta, alpha=alpha)
    label_array = np.asarray(labels).reshape(-1)
    candidate_score = _score(
        label_array, np.asarray(candidate_probabilities), gate_metric, "candidate", candidate_threshold
    )
    thresholds = {"gate_candidate_threshold": f"{candidate_threshold:.6g}"}
    if champion_probabilities is None:
        return GateDecision(
            True, "no champion yet: the first candidate is promoted", gate_metric, candidate_score, extra=thresholds
        )
    thresholds["gate_champion_threshold"] = f"{champion_threshold:.6g}"
    champion_score = _score(
        label_array, np.asarray(champion_probabilities), gate_metric, "champion", champion_threshold
    )
    p_value, only_candidate, only_champion = evaluation.mcnemar_test(
        label_array, candidate_probabilities, champion_probabilities, threshold_a=candidate_threshold,
        threshold_b=champion_threshold,
    )  # fmt: skip
    sign = -1.0 if lower_is_better(gate_metric) else 1.0
    delta = sign * (candidate_score - champion_score)
    significantly_worse = p_value < alpha and only_champion > only_candidate
    summary = (
        f"{gate_metric} {candidate_score:.4f} vs champion {champion_score:.4f} (improvement {delta:+.4f}, "
        f"min_delta {min_delta:g}); McNemar p = {p_value:.4g} (candidate alone right on {only_candidate}, "
        f"champion alone right on {only_champion}, alpha {alpha:g})"
    )
    if significantly_worse:
        verdict, promoted = "rejected: significantly worse than the champion", False
    elif delta <= 0 or delta < min_delta:
        verdict, promoted = "rejected: not better than the champion by min_delta", False
    else:
        verdict, promoted = "promoted: better than the champion and not significantly worse", True
    return GateDecision(
        promoted, f"{verdict}; {summary}", gate_metric, candidate_score, champion_score, p_value, only_candidate,
        only_champion, extra={"gate_improvement": f"{delta:.6g}", "min_delta": f"{min_delta:g}", "alpha": f"{alpha:g}",
                              **thresholds},
    )  # fmt: skip
