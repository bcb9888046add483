"""Validation carved out of the official train split.

By patient (default): no patient on both sides, so the CC and MLO views of one lesion and the
several lesions of one patient never leak across; stratified by label with scikit-learn's
StratifiedGroupKFold. By image: the published behaviour (first `val_fraction` of a random
permutation), kept to reproduce the paper.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from mammo.errors import ConfigError

SPLIT_MODES = ("patient", "image")


def split_validation(
    train_rows: pd.DataFrame, *, val_fraction: float = 0.2, seed: int = 0, split_by: str = "patient"
) -> tuple[np.ndarray, np.ndarray]:
    """Return positional (train, validation) indices into `train_rows`.

    Args:
        train_rows: manifest rows of the official train split (needs `label`, `patient_id`).
        val_fraction: share of rows (approximately, when grouped) that goes to validation.
        seed: makes the split reproducible.
        split_by: "patient" (grouped, stratified) or "image" (the published per-image split).
    """
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
    groups = train_rows["patient_id"].astype(str).to_numpy()
    labels = train_rows["label"].to_numpy()
    n_splits = min(max(2, round(1.0 / val_fraction)), len(np.unique(groups)))
    if n_splits < 2:
        raise ConfigError("split_by='patient' needs at least 2 patients in the train split; use split_by='image'.")
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train_idx, val_idx = next(folds.split(np.zeros(count), labels, groups))
    return np.sort(train_idx), np.sort(val_idx)
