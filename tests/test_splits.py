from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mammo.core.errors import ConfigError
from mammo.data.splits import split_validation, stratified_group_folds


def _rows(patients: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for patient in range(patients):
        label = int(rng.integers(0, 2))
        for _ in range(int(rng.integers(1, 5))):  # several lesions/views per patient
            rows.append({"patient_id": f"P_{patient:05d}", "label": label})
    return pd.DataFrame(rows)


def test_patient_split_has_no_patient_on_both_sides_and_keeps_label_balance() -> None:
    rows = _rows()
    train, val = split_validation(rows, val_fraction=0.2, seed=3)
    assert set(rows.patient_id.iloc[train]).isdisjoint(rows.patient_id.iloc[val])
    assert len(train) + len(val) == len(rows) and len(np.intersect1d(train, val)) == 0
    assert 0.1 < len(val) / len(rows) < 0.3
    assert abs(rows.label.iloc[val].mean() - rows.label.mean()) < 0.15


def test_split_is_reproducible_per_seed() -> None:
    rows = _rows()
    first, again, other = (split_validation(rows, seed=s)[1] for s in (1, 1, 2))
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_image_split_reproduces_the_published_per_image_split() -> None:
    rows = _rows()
    train, val = split_validation(rows, val_fraction=0.2, seed=0, split_by="image")
    assert len(val) == round(0.2 * len(rows))
    # per-image: some patient lands on both sides (the published leakage)
    assert not set(rows.patient_id.iloc[train]).isdisjoint(rows.patient_id.iloc[val])


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"val_fraction": 1.5}, "val_fraction"), ({"split_by": "lesion"}, "split_by")]
)
def test_bad_split_parameters_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        split_validation(_rows(), **kwargs)


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.4, 0.6, 0.9])
def test_patient_split_honours_any_validation_fraction(fraction: float) -> None:
    rows = _rows(patients=300, seed=1)
    train, val = split_validation(rows, val_fraction=fraction, seed=0)
    assert set(rows.patient_id.iloc[train]).isdisjoint(rows.patient_id.iloc[val])
    assert len(val) / len(rows) == pytest.approx(fraction, abs=0.03)  # 0.4, 0.6, 0.9 all gave 50 % before


def test_the_folds_are_dealt_once_per_split_and_cannot_be_changed_by_a_caller() -> None:
    """A study asks for the same split every trial: scikit-learn deals the folds once (0.9 s each time at 50 folds)."""
    stratified_group_folds.cache_clear()
    rows = _rows()
    first = split_validation(rows, val_fraction=0.2, seed=5)
    first[1][:] = 0  # what a caller does to its own copy stays there
    again = split_validation(rows, val_fraction=0.2, seed=5)
    info = stratified_group_folds.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    stratified_group_folds.cache_clear()
    assert all(
        np.array_equal(a, b) for a, b in zip(again, split_validation(rows, val_fraction=0.2, seed=5), strict=True)
    )
    groups, labels = tuple(rows.patient_id), tuple(rows.label)
    with pytest.raises(ValueError, match="read-only"):
        stratified_group_folds(groups, labels, 5, 0)[0] = 1
