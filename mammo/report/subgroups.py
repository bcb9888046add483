"""Test accuracy and AUC per subgroup: pathology, view, breast density and subtlety (pure pandas/numpy).

A single test accuracy hides where a model fails: calcifications graded subtle 1–2, or dense
breasts, can be far worse than the mean. Each subgroup gets its n, accuracy with a Wilson 95 %
interval and AUC with a DeLong 95 % interval (`evaluation.auc_interval`); AUC is NaN where the
subgroup holds one class only. Pathology BENIGN_WITHOUT_CALLBACK counts as benign. Rows without a
value (the tensors source carries no view, density or subtlety; datasets prepared before these
columns existed lack them; a value off its scale) form a `missing` group, so every attribute's n
adds up to the test set.
"""

from __future__ import annotations

import pandas as pd

from mammo.report import evaluation

ATTRIBUTES = ("pathology", "view", "breast_density", "subtlety")  # manifest columns, in report order
MISSING = "missing"
PATHOLOGY_GROUPS = {"MALIGNANT": "malignant", "BENIGN": "benign", "BENIGN_WITHOUT_CALLBACK": "benign"}
# The scales' valid values. The real CSVs hold a few 0s (2 densities in calc-test, 2 subtleties in
# mass-train), which are on neither scale: they count as missing rather than as a group of their own.
VALID_RANGES = {"breast_density": (1, 4), "subtlety": (1, 5)}
COLUMNS = (
    "attribute", "group", "n", "n_mass", "n_calc", "accuracy", "accuracy_ci_low", "accuracy_ci_high", "auc",
    "auc_ci_low", "auc_ci_high",
)  # fmt: skip


def group_names(manifest_rows: pd.DataFrame, attribute: str) -> pd.Series:
    """Each row's group for `attribute` as text ("benign", "CC", "3"); MISSING where there is no value."""
    if attribute not in manifest_rows.columns:
        return pd.Series(MISSING, index=manifest_rows.index)
    values = manifest_rows[attribute]
    if attribute == "pathology":
        return values.astype(str).str.strip().str.upper().map(PATHOLOGY_GROUPS).fillna(MISSING)
    if attribute == "view":
        text = values.fillna("").astype(str).str.strip().str.upper()
        return text.where(text != "", MISSING)
    numbers = pd.to_numeric(values, errors="coerce")  # CSV round trips turn 3 into 3.0 or "3"
    low, high = VALID_RANGES.get(attribute, (-float("inf"), float("inf")))
    return numbers.map(lambda number: f"{number:g}" if low <= number <= high else MISSING)


def _group_order(name: str) -> tuple[int, float, str]:
    if name == MISSING:
        return (2, 0.0, name)
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def subgroup_metrics(
    manifest_rows: pd.DataFrame,
    labels: object,
    probabilities: object,
    *,
    threshold: float = evaluation.DEFAULT_THRESHOLD,
) -> pd.DataFrame:
    """One row per (attribute, group) of ATTRIBUTES, in a fixed order (COLUMNS).

    manifest_rows: the prepared manifest's rows of the evaluated patches, in the order of `labels`
    and `probabilities`. `threshold` is the decision threshold the accuracy is counted at.
    """
    label_array, probability_array = evaluation.check_predictions(labels, probabilities)
    if len(manifest_rows) != len(label_array):
        raise ValueError(
            f"manifest_rows has {len(manifest_rows)} rows but labels has {len(label_array)}; pass the manifest rows "
            "of exactly the evaluated patches, in the same order."
        )
    predicted = evaluation.predict_labels(probability_array, threshold=threshold)
    rows = []
    for attribute in ATTRIBUTES:
        names = group_names(manifest_rows, attribute).to_numpy()
        for group in sorted(set(names), key=_group_order):
            members = names == group
            group_labels, group_probabilities = label_array[members], probability_array[members]
            correct = int((predicted[members] == group_labels).sum())
            low, high = evaluation.accuracy_interval(correct, len(group_labels))
            auc, auc_low, auc_high = evaluation.auc_interval(group_labels, group_probabilities)
            rows.append((
                attribute, group, len(group_labels), int((group_labels == 0).sum()), int((group_labels == 1).sum()),
                correct / len(group_labels), low, high, auc, auc_low, auc_high,
            ))  # fmt: skip
    return pd.DataFrame(rows, columns=list(COLUMNS))
