"""One class convention: every table that names or numbers the classes reads it from mammo.core.labels."""

from __future__ import annotations

import inspect

from mammo.core import decision, labels
from mammo.data import cbis, store, tensors
from mammo.report import evaluation
from mammo.serve import serving


def test_mass_is_zero_and_calcification_the_positive_class() -> None:
    assert labels.CLASS_NAMES == ("mass", "calcification")
    assert labels.LABELS == {"mass": 0, "calcification": 1} and (labels.MASS, labels.CALCIFICATION) == (0, 1)


def test_every_source_and_report_uses_the_same_names_and_numbers() -> None:
    assert store.LABEL_NAMES == {0: "mass", 1: "calcification"}
    assert cbis.LABELS == labels.LABELS
    assert {(label, kind) for label, kind, _ in tensors.RAW_LABELS.values()} == {(0, "mass"), (1, "calcification")}


def test_evaluation_and_the_served_model_default_to_one_threshold() -> None:
    served_default = inspect.signature(serving.log_model).parameters["threshold"].default
    assert (
        evaluation.DEFAULT_THRESHOLD == decision.DEFAULT_THRESHOLD == served_default == labels.DEFAULT_THRESHOLD == 0.5
    )
    assert decision.predict_labels([0.5, 0.5001]).tolist() == [0, 1]  # calcification only when p > 0.5
