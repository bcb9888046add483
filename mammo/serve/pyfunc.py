"""The pyfunc the logged model runs: rows of DICOM / patch / pixels in, P(calcification) and a label out.

This module and what it imports are all of `mammo` that a logged model carries (`serving.log_model`
copies exactly that import closure into its code_paths): the input rows (`model_input`), the DICOM
reader, the pixel convention and the decision rule; nothing of training, search or the registry.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, set_model  # noqa: F401 (set_model: re-exported for served_model.py, the model's code file)
from mlflow.types.schema import AnyType, ColSpec, Schema

from mammo.core.decision import DEFAULT_THRESHOLD, predict_labels
from mammo.core.errors import RecordError
from mammo.core.pixels import scale_patches
from mammo.serve.model_input import INPUT_DICOM, INPUT_PATCH, INPUT_PIXELS, INPUT_SHAPE, patches_from_input

KERAS_ARTIFACT = "keras_model"
OUTPUT_COLUMN = "p_calcification"
LABEL_COLUMN = "predicted_label"
PREDICT_BATCH = 64


class PatchClassifier(mlflow.pyfunc.PythonModel):
    """pyfunc around the Keras model: a table of DICOM / patch / pixels rows → p_calcification, label."""

    def load_context(self, context: Any) -> None:
        import keras

        self.model = keras.saving.load_model(context.artifacts[KERAS_ARTIFACT], compile=False)
        self.image_size = int(self.model.input_shape[1])
        config = dict(getattr(context, "model_config", None) or {})
        # The side `prepare` cut the training patches to (log_model stores it in the model config):
        # inputs are resized to it with the prepare code, then to the network's input as training did.
        self.prepared_size = int(config.get("prepared_size") or self.image_size)
        self.threshold = float(config.get("decision_threshold", DEFAULT_THRESHOLD))

    @property
    def patch_size(self) -> int:
        return self.prepared_size

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        try:
            patches = patches_from_input(model_input, size=self.prepared_size)  # (n, S0, S0) uint16
        except RecordError as error:
            raise MlflowException.invalid_parameter_value(str(error)) from error
        probabilities = self.probabilities(patches)
        labels = predict_labels(probabilities, threshold=self.threshold)
        return pd.DataFrame({OUTPUT_COLUMN: probabilities, LABEL_COLUMN: labels})

    def probabilities(self, patches: np.ndarray) -> np.ndarray:
        """P(calcification) for prepared uint16 patches (n, S0, S0), PREDICT_BATCH at a time.

        `predict_on_batch` runs the compiled predict step directly: `Model.predict` sets up a data
        adapter and callbacks on every call, which cost more than the network itself on one patch.
        """
        images = scale_patches(patches, image_size=self.image_size)  # (n, S, S, 1) float32
        batches = [
            np.asarray(self.model.predict_on_batch(images[start : start + PREDICT_BATCH]), dtype=np.float64)
            for start in range(0, len(images), PREDICT_BATCH)
        ]
        return np.concatenate(batches).reshape(-1) if batches else np.zeros(0)


def signature() -> ModelSignature:
    """Three optional input columns (one form per row) and the two output columns."""
    inputs = Schema([
        ColSpec("binary", INPUT_DICOM, required=False), ColSpec("binary", INPUT_PATCH, required=False),
        ColSpec(AnyType(), INPUT_SHAPE, required=False), ColSpec(AnyType(), INPUT_PIXELS, required=False),
    ])  # fmt: skip
    return ModelSignature(
        inputs=inputs, outputs=Schema([ColSpec("double", OUTPUT_COLUMN), ColSpec("long", LABEL_COLUMN)])
    )
