"""Validation carved out of the official train split.

By patient (default): no patient on both sides, so the CC and MLO views of one lesion and the
several lesions of one patient never leak across; stratified by label with scikit-learn's
StratifiedGroupKFold. By image: the published behaviour (first `val_fraction` of a random
permutation), kept to reproduce the paper.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from mammo.core.errors import ConfigError

SPLIT_MODES = ("patient", "image")
FINE_FOLDS = 50  # patient folds the validation share is assembled from: ~2 % steps on a large train split
PATIENTS_PER_FOLD = 5  # fewer folds on a small one, so each fold still holds both labels


def split_validation(
    train_rows: pd.DataFrame, *, val_fraction: float = 0.2, seed: int = 0, split_by: str = "patient",
    fold: int | None = None, folds: int = 0,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Return positional (train, validation) indices into `train_rows`.

    Args:
        train_rows: manifest rows of the official train split (needs `label`, `patient_id`).
        val_fraction: share of rows (approximately, when grouped) that goes to validation.
        seed: makes the split reproducible.
        split_by: "patient" (grouped, stratified) or "image" (the published per-image split).
        fold, folds: cross-validation: fold `fold` of `folds` patient-grouped, stratified folds is the
            validation split (val_fraction is then 1/folds); the same seed gives every variant the same folds.
    """
    if folds:
        return cross_validation_fold(train_rows, fold=int(fold or 0), folds=folds, seed=seed)
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction=}.")
    if split_by not in SPLIT_MODES:
        raise ConfigError(f"split_by must be one of {SPLIT_MODES}, got {split_by=!r}.")
    count = len(train_rows)
    if count < 2:
        raise ConfigError(f"need at least 2 training patches to carve a validation split, got {count}.")
    rng = np.random.default_rng(seed)
    if split_by == "image":
        order = rng.permutation(count)
        n_val = max(1, round(val_fraction * count))
        return np.sort(order[n_val:]), np.sort(order[:n_val])
    return _patient_split(train_rows, val_fraction=val_fraction, seed=seed)


def _patient_split(train_rows: pd.DataFrame, *, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Grouped by patient, stratified by label, as close to `val_fraction` of the rows as patients allow.

    StratifiedGroupKFold deals the patients into many small stratified folds (up to FINE_FOLDS, at
    least PATIENTS_PER_FOLD patients each); the
    first m folds, m chosen so their share of rows is nearest `val_fraction`, become validation. Any
    fraction works (two folds of five only ever gave 50 % or 20 %), to within about one fold's size.
    """
    count = len(train_rows)
    groups = train_rows["patient_id"].astype(str).to_numpy()
    labels = train_rows["label"].to_numpy()
    patients = len(np.unique(groups))
    n_folds = min(FINE_FOLDS, max(2, patients // PATIENTS_PER_FOLD), patients)
    if n_folds < 2:
        raise ConfigError("split_by='patient' needs at least 2 patients in the train split; use split_by='image'.")
    fold_of = stratified_group_folds(tuple(groups), tuple(labels.tolist()), n_folds, seed)
    shares = np.cumsum(np.bincount(fold_of, minlength=n_folds)) / count  # validation share with folds 0..m-1
    taken = int(np.clip(np.argmin(np.abs(shares[:-1] - val_fraction)) + 1, 1, n_folds - 1))
    validation = fold_of < taken
    return np.flatnonzero(~validation), np.flatnonzero(validation)


def cross_validation_fold(
    train_rows: pd.DataFrame, *, fold: int, folds: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) positions of fold `fold` of `folds` patient-grouped, label-stratified folds."""
    groups = train_rows["patient_id"].astype(str).to_numpy()
    if not 2 <= folds <= len(np.unique(groups)):
        raise ConfigError(f"folds={folds}: need between 2 and the number of train patients ({len(np.unique(groups))}).")
    if not 0 <= fold < folds:
        raise ConfigError(f"fold={fold} must lie in 0..{folds - 1}.")
    fold_of = stratified_group_folds(tuple(groups), tuple(train_rows["label"].to_numpy().tolist()), folds, seed)
    return np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)


@functools.lru_cache(maxsize=16)
def stratified_group_folds(groups: tuple[str, ...], labels: tuple[int, ...], n_folds: int, seed: int) -> np.ndarray:
    """Each row's fold (0..n_folds-1) under StratifiedGroupKFold(n_folds, shuffle, seed), read-only.

    Cached: a study, `train_all` or a cross-validation asks for the same split in every trial, variant
    or fold, and dealing 732 rows into 50 folds takes scikit-learn 0.9 s (measured on the Xeon at
    48 px: most of a pruned trial's 2.5 s set-up).
    """
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold_of = np.empty(len(groups), dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has fewer members than n_splits"
        for fold, (_, rows) in enumerate(splitter.split(np.zeros(len(groups)), np.asarray(labels), np.asarray(groups))):
            fold_of[rows] = fold
    fold_of.flags.writeable = False
    return fold_of
