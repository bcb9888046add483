"""The decision rule: a patch is called calcification when p > the model's threshold.

One place for the rule and for its default, so serving, the promotion gate and every reported
decision metric label a patch the same way. The threshold a model uses is chosen on validation by
training (`evaluation.choose_threshold`) and stored with the model; 0.5 is Keras's
`binary_accuracy` rule and the published analysis's, and the default when nothing else was chosen.
"""

from __future__ import annotations

import numpy as np

from mammo.core.labels import DEFAULT_THRESHOLD

__all__ = ["DEFAULT_THRESHOLD", "predict_labels"]  # the default itself lives with the class convention


def predict_labels(probabilities: object, *, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """0/1 predictions, calcification when p > threshold (Keras's rule); 0/1 inputs pass unchanged at 0.5."""
    return (np.asarray(probabilities, dtype=np.float64).reshape(-1) > threshold).astype(np.int64)
