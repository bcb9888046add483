"""The served model: raw uint16 patches in, P(calcification) out, scaling inside.

`log_model` wraps a trained Keras model in `PatchClassifier` (an MLflow pyfunc) so anything
that loads it (`mlflow.pyfunc.load_model`, `mlflow models serve`, the registry) sends the pixels
exactly as `prepare` wrote them; the /65535 scaling and any resize to the model's input size
happen here, the same way as in training (`pipeline.scale_patches`). The `.keras` file travels
inside the MLflow model (artifact `keras_model`), so the bare Keras model is also recoverable.
"""

from __future__ import annotations

import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types.schema import ColSpec, Schema, TensorSpec

from mammo import tracking

KERAS_ARTIFACT = "keras_model"
OUTPUT_COLUMN = "p_calcification"
PREDICT_BATCH = 64
# Listed rather than inferred: inference imports the model in a subprocess (TensorFlow: ~20 s).
REQUIREMENTS = ("tensorflow-cpu", "tensorflow", "keras", "mlflow", "numpy", "pandas")


class PatchClassifier(mlflow.pyfunc.PythonModel):
    """pyfunc around the Keras model: uint16 (n, S, S) or (n, S, S, 1) → DataFrame[p_calcification]."""

    def load_context(self, context: Any) -> None:
        import keras

        self.model = keras.saving.load_model(context.artifacts[KERAS_ARTIFACT], compile=False)
        self.image_size = int(self.model.input_shape[1])

    def predict(self, context: Any, model_input: np.ndarray, params: dict | None = None) -> pd.DataFrame:
        from mammo.pipeline import scale_patches

        images = scale_patches(as_patch_array(model_input), image_size=self.image_size)  # (n, S, S, 1)
        probabilities = self.model.predict(images, batch_size=PREDICT_BATCH, verbose=0)
        return pd.DataFrame({OUTPUT_COLUMN: np.asarray(probabilities, dtype=np.float64).reshape(-1)})


def as_patch_array(model_input: Any) -> np.ndarray:
    """The pyfunc input as an (n, S, S) array; a single (S, S) patch becomes a batch of one."""
    if isinstance(model_input, pd.DataFrame):
        raise mlflow.exceptions.MlflowException.invalid_parameter_value(
            "expected a uint16 tensor of patches shaped (n, S, S), not a table; send {'inputs': [[...]]}."
        )
    array = np.asarray(model_input)
    if array.ndim == 2:
        array = array[np.newaxis]
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3 or array.shape[1] != array.shape[2]:
        raise mlflow.exceptions.MlflowException.invalid_parameter_value(
            f"expected square patches shaped (n, S, S) or (n, S, S, 1), got {array.shape}."
        )
    return array


def signature() -> ModelSignature:
    """uint16 patches of any square size (resized inside) → one probability column."""
    inputs = Schema([TensorSpec(np.dtype(np.uint16), (-1, -1, -1))])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("double", OUTPUT_COLUMN)]))


def requirements() -> list[str]:
    """The installed versions of what the pyfunc imports (tensorflow-cpu here, tensorflow on GPU hosts)."""
    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def log_model(keras_model: Any, *, image_size: int, input_example: np.ndarray) -> ModelInfo:
    """Log the pyfunc under tracking.MODEL_ARTIFACT in the active run, with signature and example.

    `image_size` is the model's input side; the example is raw prepared patches (n, S0, S0) uint16.
    """
    if int(keras_model.input_shape[1]) != int(image_size):
        raise ValueError(f"image_size={image_size} but the model's input is {keras_model.input_shape}")
    example = as_patch_array(np.asarray(input_example, dtype=np.uint16))
    with tempfile.TemporaryDirectory() as tmp:
        keras_file = Path(tmp) / "model.keras"
        keras_model.save(keras_file)
        return mlflow.pyfunc.log_model(
            name=tracking.MODEL_ARTIFACT,
            python_model=PatchClassifier(),
            artifacts={KERAS_ARTIFACT: str(keras_file)},
            signature=signature(),
            input_example=example,
            pip_requirements=requirements(),
            metadata={"image_size": int(image_size), "output": OUTPUT_COLUMN, "pixel_scale": 65535},
        )


def load_keras(model_uri: str) -> Any:
    """The bare Keras model inside a logged pyfunc (e.g. to fine-tune or inspect it)."""
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().model
