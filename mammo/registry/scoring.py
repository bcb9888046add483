"""An evaluate run: any model URI of ours scored on a prepared dataset's test split, logged beside training runs.

The run gets the same test metrics, plots and predictions.csv as a training run
(`reports.log_test_report`), so an evaluation sits in the same UI columns. `test_loss` includes the
model's L2 term, as training's `val_loss` and `test_loss` do. MLflow's own classifier evaluation
(`tracking.log_classifier_evaluation`, static-prediction mode) adds its standard metrics and
confusion plot; our pyfunc takes image patches, not a feature table, and has no `predict_proba`,
so MLflow would draw no ROC/PR curve: ours (plots/roc.png) come from the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mammo import tracking
from mammo.core.labels import CLASS_NAMES
from mammo.data.store import PreparedDataset
from mammo.registry import lineage
from mammo.report import evaluation, reports
from mammo.serve import serving


@dataclass(frozen=True)
class Evaluation:
    run_id: str
    dataset: PreparedDataset
    metrics: dict[str, float]
    standard: dict[str, float]  # mlflow.models.evaluate's metrics
    patches: int


def test_loss(model: Any, labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Cross-entropy + the Keras model's L2 term: the same definition as Keras' val_loss."""
    from mammo.model.variants import regularization_penalty
    from mammo.train.training import keras_loss

    return keras_loss(labels, probabilities, regularization_penalty(serving.classifier(model).model))


def evaluate_model(
    model_uri: str, *, data: str | Path | None = None, experiment: str | None = None, plots: bool = True
) -> Evaluation:
    """Score `model_uri` on the test split of `data` (default: the data it was trained on), as a new run."""
    dataset = lineage.dataset_for_model(model_uri, data)
    indices, patches, labels = lineage.held_out_patches(dataset)
    model = serving.load(model_uri)
    probabilities = serving.predict_batches(model, patches)
    loss = test_loss(model, labels, probabilities)
    with tracking.start_run(run_name="evaluate", experiment=experiment, tags={tracking.ENTRY_TAG: "evaluate"}) as run:
        tracking.log_params({
            "model_uri": model_uri, "data_source": dataset.source, "data_digest": dataset.digest,
            "image_size": dataset.image_size, "prepared_dir": str(dataset.path),
        })  # fmt: skip
        tracking.log_prepared_input(dataset, context="evaluation")
        metrics = reports.log_test_report(
            probabilities=probabilities, dataset=dataset, indices=indices, plots=plots, loss=loss,
            threshold=serving.threshold(model),
        )  # fmt: skip
        if plots:
            reports.log_saliency(
                model=serving.classifier(model).model, dataset=dataset, indices=indices, probabilities=probabilities,
                threshold=serving.threshold(model),
            )  # fmt: skip
        standard = tracking.log_classifier_evaluation(
            labels=labels,
            predictions=evaluation.predict_labels(probabilities, threshold=serving.threshold(model)),
            class_names=CLASS_NAMES,
        )
    return Evaluation(run.info.run_id, dataset, metrics, standard, len(labels))
