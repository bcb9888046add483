"""Subgroup metrics on a hand-made test set whose per-group answers are counted by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mammo.report import evaluation, subgroups

# Eight patches: masses 0–3, calcifications 4–7. Wrong: 1 (mass at 0.7) and 6 (calc at 0.2).
ROWS = pd.DataFrame({
    "pathology": ["MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK", "MALIGNANT", "BENIGN", "MALIGNANT", "BENIGN",
                  "MALIGNANT"],
    "view": ["CC", "MLO", "CC", "MLO", "CC", "MLO", "CC", None],
    "breast_density": [1, 2, 2, 3, 3, 3, 0, np.nan],  # 0 is off the BI-RADS 1–4 scale
    "subtlety": ["5", "5", "3", "3", "5", "5", "3", "3"],  # as a CSV round trip may leave them
})  # fmt: skip
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1])
PROBABILITIES = np.array([0.1, 0.7, 0.2, 0.3, 0.9, 0.8, 0.2, 0.6])


def _row(table: pd.DataFrame, attribute: str, group: str) -> pd.Series:
    matches = table[(table["attribute"] == attribute) & (table["group"] == group)]
    assert len(matches) == 1, (attribute, group, table[["attribute", "group"]].values.tolist())
    return matches.iloc[0]


def test_each_attribute_is_split_into_its_groups_in_order_with_counts_that_add_up() -> None:
    table = subgroups.subgroup_metrics(ROWS, LABELS, PROBABILITIES)
    assert list(table.columns) == list(subgroups.COLUMNS)
    assert table[["attribute", "group"]].values.tolist() == [
        ["pathology", "benign"], ["pathology", "malignant"], ["view", "CC"], ["view", "MLO"], ["view", "missing"],
        ["breast_density", "1"], ["breast_density", "2"], ["breast_density", "3"], ["breast_density", "missing"],
        ["subtlety", "3"], ["subtlety", "5"],
    ]  # fmt: skip
    assert (table.groupby("attribute")["n"].sum() == len(LABELS)).all()
    benign = _row(table, "pathology", "benign")  # patches 1, 2, 4, 6: wrong 1 and 6
    assert (benign["n"], benign["n_mass"], benign["n_calc"], benign["accuracy"]) == (4, 2, 2, 0.5)
    assert (benign["accuracy_ci_low"], benign["accuracy_ci_high"]) == evaluation.accuracy_interval(2, 4)
    auc, low, high = evaluation.auc_interval(LABELS[[1, 2, 4, 6]], PROBABILITIES[[1, 2, 4, 6]])
    assert (benign["auc"], benign["auc_ci_low"], benign["auc_ci_high"]) == pytest.approx((auc, low, high))
    assert _row(table, "subtlety", "3")["accuracy"] == pytest.approx(3 / 4)  # patches 2, 3, 6, 7: 6 wrong


def test_a_group_with_one_class_has_no_auc_and_a_threshold_moves_the_accuracy() -> None:
    table = subgroups.subgroup_metrics(ROWS, LABELS, PROBABILITIES)
    density_one = _row(table, "breast_density", "1")  # patch 0 only: a mass
    assert density_one["accuracy"] == 1.0 and math.isnan(density_one["auc"])
    strict = subgroups.subgroup_metrics(ROWS, LABELS, PROBABILITIES, threshold=0.75)
    assert _row(strict, "view", "MLO")["accuracy"] == 1.0  # the mass at 0.7 is now right, the calc at 0.8 still
    assert _row(table, "view", "MLO")["accuracy"] == pytest.approx(2 / 3)


def test_older_manifests_without_the_columns_give_missing_groups() -> None:
    table = subgroups.subgroup_metrics(ROWS[["pathology"]], LABELS, PROBABILITIES)
    missing = table[table["group"] == subgroups.MISSING]
    assert missing["attribute"].tolist() == ["view", "breast_density", "subtlety"]
    assert missing["n"].tolist() == [8, 8, 8]
    assert missing["accuracy"].tolist() == pytest.approx([6 / 8] * 3)
    with pytest.raises(ValueError, match="manifest_rows has 2 rows but labels has 8"):
        subgroups.subgroup_metrics(ROWS.head(2), LABELS, PROBABILITIES)
