"""The served model: DICOM files, uint16 patches or pixel arrays in, P(calcification) and a label out.

`log_model` logs the trained Keras model as an MLflow pyfunc built from code (`served_model.py`,
MLflow's "models from code") that carries the modules of ours it imports (`served_modules`: serve/pyfunc,
model_input, the DICOM reader and core/, as `code_paths`), so the
model loads and serves in any environment built from its own requirements.txt: another machine,
`mlflow models serve --env-manager virtualenv`, a `mlflow models build-docker` image. Nothing of
ours is CloudPickled. Everything that loads it (`mlflow.pyfunc.load_model`, `mlflow models serve`,
promote, evaluate, predict) gets the same pixels as training: `model_input` turns each row into
the patch `prepare` would have made, then the /65535 scaling and any resize to the network's input
happen as in training (`pixels.scale_patches`). The `.keras` file travels inside the MLflow model
(artifact `keras_model`), so the bare Keras model is also recoverable.

Signature: a column-based input schema with three optional columns (MLflow 3 optional ColSpecs):
`dicom` and `patch` are binary (JSON clients send base64, which MLflow's scoring server decodes),
`pixels` is AnyType (2-D arrays of any size: MLflow's Array type would check every element in
Python, ~1 s for a batch of 32 patches). Outputs: `p_calcification` and `predicted_label`, the
label at the decision threshold stored with the model (`model_config["decision_threshold"]`, chosen
on validation by training). Bad input raises MlflowException(INVALID_PARAMETER_VALUE), which the
scoring server answers with HTTP 400 and the message (which row, what is wrong, how to fix it).
"""

from __future__ import annotations

import ast
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models.model import ModelInfo

from mammo import tracking
from mammo.core.decision import DEFAULT_THRESHOLD
from mammo.core.errors import ConfigError
from mammo.core.pixels import PIXEL_MAX, as_patch_batch
from mammo.serve.model_input import INPUT_DICOM, INPUT_PATCH, INPUT_PIXELS, INPUT_SHAPE, patch_table
from mammo.serve.pyfunc import (  # noqa: F401 (re-exported: the names callers read as serving.X)
    KERAS_ARTIFACT,
    LABEL_COLUMN,
    OUTPUT_COLUMN,
    PREDICT_BATCH,
    PatchClassifier,
    signature,
)

SCORE_BATCH = 256  # rows per pyfunc call when scoring a whole split (the served model's row limit)
MODEL_CODE = Path(__file__).with_name("served_model.py")
PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the `mammo` folder
# Listed rather than inferred: inference imports the model in a subprocess (TensorFlow: ~20 s).
REQUIREMENTS = (
    "tensorflow-cpu", "tensorflow", "keras", "mlflow", "numpy", "pandas", "pydicom", "pylibjpeg",
    "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle", "scikit-image",
)  # fmt: skip


# tensorflow-cpu has wheels for Linux x86-64 only (pyproject.toml's markers): elsewhere the same version of tensorflow.
CPU_WHEEL_MARKER = "sys_platform == 'linux' and platform_machine == 'x86_64'"
OTHER_PLATFORMS_MARKER = "sys_platform != 'linux' or platform_machine != 'x86_64'"  # (PEP 508 has no `not`)


def requirements() -> list[str]:
    """The installed versions of what the pyfunc imports (tensorflow-cpu here, tensorflow on GPU hosts).

    A model logged with tensorflow-cpu names tensorflow of the same version for every other platform,
    so `mlflow models serve` builds its environment on a Mac or an ARM server too.
    """
    pins = []
    for name in REQUIREMENTS:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        if name == "tensorflow-cpu":
            pins += [f"{name}=={version}; {CPU_WHEEL_MARKER}", f"tensorflow=={version}; {OTHER_PLATFORMS_MARKER}"]
        elif not (name == "tensorflow" and any(pin.startswith("tensorflow==") for pin in pins)):
            pins.append(f"{name}=={version}")
    return pins


def served_modules() -> list[Path]:
    """The files of `mammo` the served model imports: served_model.py's import closure, with its packages' __init__.

    Lazy imports inside functions count too (ast.walk sees them), so what a logged model carries
    is exactly what it can import, whatever the rest of the package grows into.
    """
    found: set[Path] = set()
    todo = [MODEL_CODE]
    while todo:
        for module in _mammo_imports(todo.pop()):
            parts = module.split(".")[1:]
            for depth in range(len(parts) + 1):  # every package on the way, then the module itself
                folder = PACKAGE_ROOT.joinpath(*parts[:depth])
                for path in (folder / "__init__.py", folder.with_suffix(".py")):
                    if path.is_file() and path not in found and path != MODEL_CODE:
                        found.add(path)
                        todo.append(path)
    return sorted(found)


def _mammo_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if name == "mammo" or name.startswith("mammo.")}


def _served_copy(folder: Path) -> Path:
    """A copy of the served modules (no caches) as a `mammo` package, for the model's code_paths."""
    target = folder / "mammo"
    for path in served_modules():
        destination = target / path.relative_to(PACKAGE_ROOT)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)
    return target


def log_model(
    keras_model: Any, *, image_size: int, input_example: np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> ModelInfo:
    """Log the pyfunc under tracking.MODEL_ARTIFACT in the active run, with signature and example.

    `image_size` is the model's input side; the example is raw prepared patches (n, S0, S0) uint16,
    and S0 is the side DICOM and pixel inputs are resized to before the network's own resize.
    """
    if int(keras_model.input_shape[1]) != int(image_size):
        raise ValueError(f"image_size={image_size} but the model's input is {keras_model.input_shape}")
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold must lie in [0, 1], got {threshold}.")
    example = as_patch_batch(np.asarray(input_example, dtype=np.uint16))
    prepared_size = int(example.shape[1])
    with tempfile.TemporaryDirectory() as tmp:
        keras_file = Path(tmp) / "model.keras"
        keras_model.save(keras_file)
        return mlflow.pyfunc.log_model(
            name=tracking.MODEL_ARTIFACT,
            python_model=str(MODEL_CODE),
            code_paths=[str(_served_copy(Path(tmp)))],
            artifacts={KERAS_ARTIFACT: str(keras_file)},
            # MLflow also logs model_config as the run's params: names that do not clash with the config's.
            model_config={"prepared_size": prepared_size, "decision_threshold": float(threshold)},
            signature=signature(),
            input_example=patch_table(example),
            pip_requirements=requirements(),
            metadata={
                "image_size": int(image_size),
                "prepared_size": prepared_size,
                "threshold": float(threshold),
                "output": OUTPUT_COLUMN,
                "pixel_scale": PIXEL_MAX,
                "inputs": f"one of {INPUT_DICOM} (DICOM bytes) | {INPUT_PATCH} (uint16 bytes, + {INPUT_SHAPE}) | "
                f"{INPUT_PIXELS} (2-D array) per row",
            },
        )


def load(model_uri: str) -> Any:
    """A pyfunc model of ours, loaded; MLflow's errors (unknown URI, no such alias) pass through.

    MLflow puts the model's code folder first on sys.path and leaves it there. Here `mammo` is
    imported already (the classes come from it), and that folder holds only the served modules, so
    the path is put back: a later import in this process, or a worker it spawns (which inherits
    sys.path), keeps finding the whole package.
    """
    path = list(sys.path)
    try:
        return mlflow.pyfunc.load_model(model_uri)
    finally:
        sys.path[:] = path


def classifier(model: Any) -> PatchClassifier:
    """The PatchClassifier inside a loaded pyfunc, or a clear error for someone else's model."""
    inner = model.unwrap_python_model()
    if not hasattr(inner, "probabilities") or not hasattr(inner, "prepared_size"):
        raise ConfigError(
            f"the model is a {type(inner).__name__}, not a mammo PatchClassifier; pass a model logged by train."
        )
    return inner


def patch_size(model: Any) -> int:
    """The side raw patches should have for a loaded pyfunc of ours (`load`)."""
    return int(classifier(model).prepared_size)


def threshold(model: Any) -> float:
    """The decision threshold stored with a loaded pyfunc of ours."""
    return float(getattr(classifier(model), "threshold", DEFAULT_THRESHOLD))


def probabilities_of(output: Any) -> np.ndarray:
    """P(calcification) as a flat float array from whatever the pyfunc returned."""
    if isinstance(output, pd.DataFrame):
        output = output[OUTPUT_COLUMN] if OUTPUT_COLUMN in output.columns else output.iloc[:, 0]
    return np.asarray(output, dtype=np.float64).reshape(-1)


def predict_table(model: Any, patches: np.ndarray) -> pd.DataFrame:
    """A loaded pyfunc's output (p_calcification, predicted_label) for prepared uint16 patches (n, S, S).

    The patches go through the model's own schema in the compact `patch` column, SCORE_BATCH rows
    per call (the served model's row limit, and bounded memory), the way any client's request would.
    """
    frames = [
        model.predict(patch_table(patches[start : start + SCORE_BATCH]))
        for start in range(0, len(patches), SCORE_BATCH)
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({OUTPUT_COLUMN: [], LABEL_COLUMN: []})


def predict_batches(model: Any, patches: np.ndarray) -> np.ndarray:
    """A loaded pyfunc's P(calcification) for prepared uint16 patches (n, S, S)."""
    return probabilities_of(predict_table(model, patches))


def score_model(model_uri: str, patches: np.ndarray) -> np.ndarray:
    """Load any model URI of ours and predict P(calcification) for uint16 patches (n, S, S)."""
    return predict_batches(load(model_uri), patches)


def score_with_threshold(model_uri: str, patches: np.ndarray) -> tuple[np.ndarray, float]:
    """(P(calcification), the model's stored decision threshold) for uint16 patches (n, S, S).

    The gate judges the rule the served model applies: its `predicted_label` is p > this threshold.
    """
    model = load(model_uri)
    return predict_batches(model, patches), threshold(model)


def source_run_id(model_uri: str) -> str | None:
    """The run that logged the model a URI points at (runs:/, models:/<id>, models:/<name>@alias or /<version>)."""
    return mlflow.models.get_model_info(model_uri).run_id


def load_keras(model_uri: str) -> Any:
    """The bare Keras model inside a logged pyfunc (e.g. to fine-tune or inspect it)."""
    return classifier(load(model_uri)).model
