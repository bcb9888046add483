"""Cross-validated comparison of the variants: mean ± sd over patient-grouped folds, and a paired test.

With a small test split (24 patches in a smoke run, 336 in the published one) one test score per
variant is weak evidence. `train_all --folds K` trains every variant on the same K patient-grouped
folds of the train split; each fold's kept-checkpoint validation AUC and accuracy are paired across
variants. The paired test is Nadeau and Bengio's corrected resampled t-test (Machine Learning 52,
2003): a plain paired t-test over CV folds is too liberal because the folds' training sets overlap,
so the variance is inflated by (1/K + n_val/n_train). Pure numbers here; `series` logs them.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

CV_METRICS = ("kept_val_auc", "kept_val_accuracy")


def corrected_paired_t(differences: np.ndarray, *, val_to_train: float) -> float:
    """Two-sided p of the corrected resampled t-test on per-fold differences (NaN with < 2 folds)."""
    values = np.asarray(differences, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return float("nan")
    variance = values.var(ddof=1) * (1.0 / len(values) + val_to_train)
    if variance == 0:
        return 1.0 if values.mean() == 0 else 0.0
    t_statistic = values.mean() / math.sqrt(variance)
    return float(2 * stats.t.sf(abs(t_statistic), df=len(values) - 1))


def cv_table(folds: pd.DataFrame, *, reference: str = "model5", val_to_train: float = 0.25) -> pd.DataFrame:
    """One row per variant: folds, mean and sd of each CV metric, and the corrected p vs `reference` on val AUC.

    `folds` has one row per (variant, fold) with the CV_METRICS columns.
    """
    rows = []
    by_fold = folds.pivot(index="fold", columns="variant", values="kept_val_auc")
    for variant, group in folds.groupby("variant", sort=False):
        row: dict[str, object] = {"variant": variant, "folds": len(group)}
        for metric in CV_METRICS:
            row[f"{metric}_mean"] = float(group[metric].mean())
            row[f"{metric}_sd"] = float(group[metric].std(ddof=1)) if len(group) > 1 else float("nan")
        if reference in by_fold.columns:
            differences = (by_fold[variant] - by_fold[reference]).to_numpy()
            row[f"p_vs_{reference}"] = (
                1.0 if variant == reference else corrected_paired_t(differences, val_to_train=val_to_train)
            )
        rows.append(row)
    return pd.DataFrame(rows)


def pairwise_p(folds: pd.DataFrame, *, metric: str = "kept_val_auc", val_to_train: float = 0.25) -> pd.DataFrame:
    """The corrected paired p-value between every two variants on `metric` (a symmetric matrix, 1 on the diagonal)."""
    by_fold = folds.pivot(index="fold", columns="variant", values=metric)
    names = list(dict.fromkeys(folds["variant"]))
    matrix = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for first, second in combinations(names, 2):
        p = corrected_paired_t((by_fold[first] - by_fold[second]).to_numpy(), val_to_train=val_to_train)
        matrix.loc[first, second] = matrix.loc[second, first] = p
    return matrix
