"""The served model: raw DICOM, pixel arrays or prepared patches in, P(calcification) out.

`log_model` wraps a trained Keras model in `PatchClassifier` (an MLflow pyfunc) so anything
that loads it (`mlflow.pyfunc.load_model`, `mlflow models serve`, the registry, `predict`) gets
the same pixels as training. Three input forms:

- uint16 patches (n, S, S) or (n, S, S, 1), exactly as `prepare` wrote them (`{"inputs": [[[...]]]}`);
- a column `dicom` of base64-encoded cropped-ROI DICOM files (`{"dataframe_split": {"columns": ["dicom"], ...}}`);
- a column `pixels` of 2-D arrays of any shape, values 0..65535 (`{"inputs": {"pixels": [[[...]]]}}`).

DICOM goes through `dicom.patch_from_dicom` (modality/VOI LUT, MONOCHROME1, mask check, resize) and
pixel arrays through `dicom.resize_patch`, to the size `prepare` used for the training data, so a
served file becomes the very patch training saw; then the /65535 scaling and any resize to the
network's input happen as in training (`pipeline.scale_patches`). The `.keras` file travels inside
the MLflow model (artifact `keras_model`), so the bare Keras model is also recoverable.

Signature: outputs only (one `p_calcification` column), no input schema. MLflow 3.17 signatures
are either tensor-based or column-based, and a column-based one (even with optional columns)
makes MLflow turn a tensor input into a DataFrame, which a 3-D patch array cannot be; so no
schema can admit both a uint16 tensor and a table with one of two columns. The model validates its
input itself instead and raises MlflowException(INVALID_PARAMETER_VALUE), which the scoring server
answers with HTTP 400 and the message (which row, what is wrong, how to fix it).
"""

from __future__ import annotations

import base64
import binascii
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types.schema import ColSpec, Schema

from mammo import tracking
from mammo.data.dicom import UINT16_MAX, is_roi_mask, patch_from_dicom, resize_patch
from mammo.errors import RecordError

KERAS_ARTIFACT = "keras_model"
OUTPUT_COLUMN = "p_calcification"
INPUT_DICOM = "dicom"
INPUT_PIXELS = "pixels"
PREDICT_BATCH = 64
# Listed rather than inferred: inference imports the model in a subprocess (TensorFlow: ~20 s).
REQUIREMENTS = (
    "tensorflow-cpu", "tensorflow", "keras", "mlflow", "numpy", "pandas", "pydicom", "pylibjpeg",
    "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "scikit-image",
)  # fmt: skip


class PatchClassifier(mlflow.pyfunc.PythonModel):
    """pyfunc around the Keras model: patches, base64 DICOM or pixel arrays → DataFrame[p_calcification]."""

    def __init__(self, prepared_size: int | None = None) -> None:
        # The side `prepare` cut the training patches to: DICOM and pixel inputs are resized to it
        # with the prepare code, then to the network's input as training did.
        self.prepared_size = prepared_size

    def load_context(self, context: Any) -> None:
        import keras

        self.model = keras.saving.load_model(context.artifacts[KERAS_ARTIFACT], compile=False)
        self.image_size = int(self.model.input_shape[1])

    @property
    def patch_size(self) -> int:
        """The side raw patches should have before `predict` (models logged before it existed: the input side)."""
        return int(getattr(self, "prepared_size", None) or self.image_size)

    # model_input is left unannotated on purpose: MLflow reads predict's type hints as an input
    # schema (and warns about `Any`); the input forms are checked in `patches_from_input` instead.
    def predict(self, context: Any, model_input, params: dict | None = None) -> pd.DataFrame:
        from mammo.pipeline import scale_patches

        try:
            patches = patches_from_input(model_input, size=self.patch_size)  # (n, S0, S0) uint16
        except RecordError as error:
            raise MlflowException.invalid_parameter_value(str(error)) from error
        images = scale_patches(patches, image_size=self.image_size)  # (n, S, S, 1)
        probabilities = self.model.predict(images, batch_size=PREDICT_BATCH, verbose=0)
        return pd.DataFrame({OUTPUT_COLUMN: np.asarray(probabilities, dtype=np.float64).reshape(-1)})


def as_patch_array(model_input: Any) -> np.ndarray:
    """The pyfunc input as an (n, S, S) array; a single (S, S) patch becomes a batch of one."""
    array = np.asarray(model_input)
    if array.ndim == 2:
        array = array[np.newaxis]
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3 or array.shape[1] != array.shape[2] or not np.issubdtype(array.dtype, np.number):
        raise RecordError(
            f"expected square uint16 patches shaped (n, S, S) or (n, S, S, 1), got {array.dtype} {array.shape}; "
            f"or send a table with a column '{INPUT_DICOM}' (base64 DICOM files) or '{INPUT_PIXELS}' (2-D arrays).",
            reason="bad_input",
        )
    _check_range(array)
    return array


def _check_range(pixels: np.ndarray) -> None:
    if pixels.size and (pixels.min() < 0 or pixels.max() > UINT16_MAX):
        raise RecordError(
            f"pixel values must lie in 0..{UINT16_MAX} (uint16, as prepare writes them), got "
            f"{pixels.min()}..{pixels.max()}.",
            reason="bad_pixels",
        )


def decode_base64(value: Any) -> bytes:
    """A `dicom` cell: base64 text (JSON) or raw bytes (Python callers)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if not isinstance(value, str):
        raise RecordError(
            f"column '{INPUT_DICOM}' must hold base64-encoded DICOM files as text, got {type(value).__name__}.",
            reason="bad_base64",
        )
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as error:
        raise RecordError(
            f"column '{INPUT_DICOM}' is not valid base64 ({error}); send base64.b64encode(file_bytes).decode().",
            reason="bad_base64",
        ) from error


def patch_from_pixels(value: Any, *, size: int) -> np.ndarray:
    """A 2-D pixel array of any shape → (size, size) uint16 by the prepare code (`dicom.resize_patch`)."""
    try:
        pixels = np.asarray(value.tolist() if isinstance(value, np.ndarray) and value.dtype == object else value)
    except (TypeError, ValueError) as error:  # ragged nested lists
        raise RecordError(f"pixels must be a 2-D array of numbers ({error}).", reason="bad_pixels") from error
    if pixels.ndim != 2 or pixels.size == 0 or not np.issubdtype(pixels.dtype, np.number):
        raise RecordError(
            f"pixels must be a non-empty 2-D array of numbers, got shape {pixels.shape} ({pixels.dtype}).",
            reason="bad_pixels",
        )
    _check_range(pixels)
    if is_roi_mask(pixels):
        raise RecordError(
            "the pixels are a binary ROI mask, not a cropped mammogram patch; send the cropped image.",
            reason="roi_mask",
        )
    return resize_patch(pixels, size)


def _per_row(values: list[Any], convert: Any) -> np.ndarray:
    patches = []
    for row, value in enumerate(values):
        try:
            patches.append(convert(value))
        except RecordError as error:
            raise RecordError(f"row {row}: {error}", reason=error.reason) from error
    if not patches:
        raise RecordError("the request holds no rows to score.", reason="bad_input")
    return np.stack(patches)


def patches_from_input(model_input: Any, *, size: int) -> np.ndarray:
    """Any accepted input form → uint16 patches (n, S, S); S = `size` for DICOM and pixel inputs.

    Raises:
        RecordError: naming the row and what is wrong (bad base64, not DICOM, a mask, wrong column).
    """
    if isinstance(model_input, pd.DataFrame):
        columns = {str(name): model_input[name].tolist() for name in model_input.columns}
    elif isinstance(model_input, dict):  # {"inputs": {"pixels": [...]}} arrives as a dict of arrays
        columns = {str(name): [value] if np.isscalar(value) else list(value) for name, value in model_input.items()}
    else:
        return as_patch_array(model_input)
    if INPUT_DICOM in columns:
        return _per_row(columns[INPUT_DICOM], lambda value: patch_from_dicom(decode_base64(value), size=size)[0])
    if INPUT_PIXELS in columns:
        return _per_row(columns[INPUT_PIXELS], lambda value: patch_from_pixels(value, size=size))
    raise RecordError(
        f"expected a column '{INPUT_DICOM}' (base64-encoded DICOM files) or '{INPUT_PIXELS}' (2-D pixel arrays), "
        f"got columns {sorted(columns)}.",
        reason="bad_input",
    )


def signature() -> ModelSignature:
    """One probability column out; no input schema (see the module docstring for why)."""
    return ModelSignature(inputs=None, outputs=Schema([ColSpec("double", OUTPUT_COLUMN)]))


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

    `image_size` is the model's input side; the example is raw prepared patches (n, S0, S0) uint16,
    and S0 is the side DICOM and pixel inputs are resized to before the network's own resize.
    """
    if int(keras_model.input_shape[1]) != int(image_size):
        raise ValueError(f"image_size={image_size} but the model's input is {keras_model.input_shape}")
    example = as_patch_array(np.asarray(input_example, dtype=np.uint16))
    prepared_size = int(example.shape[1])
    with tempfile.TemporaryDirectory() as tmp:
        keras_file = Path(tmp) / "model.keras"
        keras_model.save(keras_file)
        return mlflow.pyfunc.log_model(
            name=tracking.MODEL_ARTIFACT,
            python_model=PatchClassifier(prepared_size=prepared_size),
            artifacts={KERAS_ARTIFACT: str(keras_file)},
            signature=signature(),
            input_example=example,
            pip_requirements=requirements(),
            metadata={
                "image_size": int(image_size),
                "prepared_size": prepared_size,
                "output": OUTPUT_COLUMN,
                "pixel_scale": 65535,
                "inputs": f"uint16 patches (n, S, S) | column '{INPUT_DICOM}' | '{INPUT_PIXELS}'",
            },
        )


def patch_size(model: Any) -> int:
    """The side raw patches should have for a loaded pyfunc (`mlflow.pyfunc.load_model`) of ours."""
    classifier = model.unwrap_python_model()
    if not isinstance(classifier, PatchClassifier):
        raise MlflowException.invalid_parameter_value(
            f"the model is a {type(classifier).__name__}, not a mammo PatchClassifier; pass a model logged by train."
        )
    return classifier.patch_size


def load_keras(model_uri: str) -> Any:
    """The bare Keras model inside a logged pyfunc (e.g. to fine-tune or inspect it)."""
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().model
