"""The class convention every part shares: mass is label 0, calcification label 1 (the positive class).

The model outputs p(calcification); a patch is called calcification when p > DEFAULT_THRESHOLD
unless the run stored another threshold with its model. Pure: no imports beyond the standard library.
"""

from __future__ import annotations

CLASS_NAMES = ("mass", "calcification")  # index = label
LABELS = {name: label for label, name in enumerate(CLASS_NAMES)}  # {"mass": 0, "calcification": 1}
MASS, CALCIFICATION = LABELS["mass"], LABELS["calcification"]
DEFAULT_THRESHOLD = 0.5  # Keras's binary_accuracy rule: calcification when p > 0.5
