"""`predict` entry point: a model URI + a folder of cropped-ROI DICOMs or PNG/NumPy patches → a CSV.

Every file under the folder (any layout, recursive) gets one row: its P(calcification) and
predicted label, with the DICOM PatientID and SeriesInstanceUID when it has them, or, when it
cannot be read, empty scores and the reason in `error`. Nothing is dropped silently.

Files are turned into patches with the model's own preprocessing (`dicom.patch_from_dicom`,
`serving.patch_from_pixels`: the functions `prepare` and the served model use), then scored in
batches, so one bad file costs one row, not the whole batch.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from entrypoints import optional_str
from mammo import evaluation, registry, serving, tracking
from mammo.data.dicom import UINT16_MAX, patch_from_dicom
from mammo.data.store import LABEL_NAMES
from mammo.errors import MammoError, RecordError

COLUMNS = ["file", serving.OUTPUT_COLUMN, "predicted_label", "predicted_class", "PatientID", "SeriesInstanceUID", "error"]  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="predict", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-uri", type=optional_str, default=f"models:/{tracking.MODEL_NAME}@{tracking.ALIAS_CHAMPION}"
    )
    parser.add_argument("--input", type=optional_str, help="folder (searched recursively) or a single file")
    parser.add_argument("--output", type=optional_str, default="predictions.csv", help="CSV to write")
    parser.add_argument("--experiment", type=optional_str, help=f"MLflow experiment (default {tracking.EXPERIMENT})")
    args = parser.parse_args(argv)
    args.model_uri = args.model_uri or f"models:/{tracking.MODEL_NAME}@{tracking.ALIAS_CHAMPION}"
    args.output = args.output or "predictions.csv"
    if args.input is None:
        parser.error("--input is required: a folder of cropped-ROI DICOMs or PNG/NumPy patches, or one file")
    return args


def input_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise MammoError(f"--input {root} does not exist; pass a folder of DICOM/PNG/NumPy files or one file.")
    files = sorted(path for path in root.rglob("*") if path.is_file())
    if not files:
        raise MammoError(f"--input {root} holds no files; pass a folder of DICOM/PNG/NumPy files.")
    return files


def read_png(path: Path) -> np.ndarray:
    """A greyscale PNG as uint16 values: 16-bit as stored, 8-bit stretched ×257 onto the same 0..65535 range."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            mode, pixels = image.mode, np.asarray(image)
    except (OSError, UnidentifiedImageError) as exc:
        raise RecordError(f"{path} is not a readable PNG ({exc}).", reason="unreadable_png") from exc
    if mode in ("L", "LA"):
        return pixels[..., 0].astype(np.uint16) * 257 if mode == "LA" else pixels.astype(np.uint16) * 257
    if mode.startswith("I"):
        return np.clip(pixels, 0, UINT16_MAX).astype(np.uint16)
    raise RecordError(f"{path} is a {mode} PNG; save the patch as 8- or 16-bit greyscale.", reason="wrong_image_kind")


def read_patch(path: Path, *, size: int) -> tuple[np.ndarray, dict[str, str]]:
    """One file → (patch (size, size) uint16, DICOM identifiers); RecordError says why it cannot be used."""
    suffix = path.suffix.lower()
    if suffix == ".png":
        return serving.patch_from_pixels(read_png(path), size=size), {}
    if suffix == ".npy":
        try:
            pixels = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise RecordError(f"{path} is not a readable .npy array ({exc}).", reason="unreadable_npy") from exc
        return serving.patch_from_pixels(pixels, size=size), {}
    # Anything else is tried as DICOM: NBIA downloads name them .dcm, other tools use no suffix.
    patch, meta = patch_from_dicom(path, size=size)
    return patch, {key: meta.get(key) or "" for key in ("PatientID", "SeriesInstanceUID")}


def predict_folder(model_uri: str, root: Path) -> pd.DataFrame:
    """The CSV's rows: one per file, scored or with its error."""
    model = mlflow.pyfunc.load_model(model_uri)
    size = serving.patch_size(model)
    rows, patches = [], []
    for path in input_files(root):
        name = str(path.relative_to(root)) if root.is_dir() else path.name
        try:
            patch, ids = read_patch(path, size=size)
        except RecordError as error:
            rows.append({"file": name, "error": f"{error.reason}: {error}"})
            continue
        rows.append({"file": name, **ids})
        patches.append(patch)
    if patches:
        probabilities = registry.predict_batches(model, np.stack(patches))  # patches: (n, size, size)
        scored = iter(zip(probabilities, evaluation.predict_labels(probabilities), strict=True))
        for row in rows:
            if "error" not in row:
                probability, label = next(scored)
                row |= {serving.OUTPUT_COLUMN: float(probability), "predicted_label": int(label)}
                row["predicted_class"] = LABEL_NAMES[int(label)]
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["predicted_label"] = table["predicted_label"].astype("Int64")
    return table


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(args.input)
    try:
        table = predict_folder(args.model_uri, root)
    except (MammoError, MlflowException) as error:
        print(f"predict: error: {error}", file=sys.stderr)
        return 2
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(output, index=False)
    failed = table[table["error"].notna()]
    reasons = Counter(error.split(":", 1)[0] for error in failed["error"])
    with tracking.start_run(run_name="predict", experiment=args.experiment, tags={"mammo.entry": "predict"}):
        tracking.log_params({"model_uri": args.model_uri, "input": str(root.resolve()), "output": str(output)})
        tracking.log_metrics({"files": len(table), "predicted": len(table) - len(failed), "unreadable": len(failed)})
        tracking.log_dataframe(table, output.name)
    print(f"predicted {len(table) - len(failed)} of {len(table)} files with {args.model_uri} -> {output}")
    if len(failed):
        print(f"{len(failed)} files could not be read ({dict(reasons)}); their reasons are in the CSV's error column")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
