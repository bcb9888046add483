"""Batch prediction over a folder of cropped-ROI DICOMs or PNG/NumPy patches: one CSV row per file.

Every file under the folder (any layout, recursive) gets one row: its P(calcification) and the
label at the threshold stored with the model, with the DICOM PatientID and SeriesInstanceUID when
it has them, or, when it cannot be read, empty scores and the reason in `error`. Nothing is dropped
silently. Files become patches with the model's own preprocessing (`dicom.patch_from_dicom`,
`model_input.raw_values` + `dicom.resize_patch`: what `prepare` and the served model use), then
are scored in batches, so one bad file costs one row, not the whole batch. The folder is read a
batch of files at a time (`FILE_BATCH`), so memory is bounded by the batch, not the folder. Full
mammograms and ROI masks are refused by reason (`full_mammogram`, `roi_mask`), never scored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammo import tracking
from mammo.core.errors import DataError, RecordError
from mammo.core.pixels import PIXEL_MAX
from mammo.data.dicom import patch_from_dicom, resize_patch
from mammo.data.store import LABEL_NAMES
from mammo.serve import serving
from mammo.serve.model_input import raw_values

FILE_BATCH = 64  # files read and scored together: at 150 px, 64 patches are ~4 MB as the network's float32
COLUMNS = ["file", serving.OUTPUT_COLUMN, serving.LABEL_COLUMN, "predicted_class", "PatientID", "SeriesInstanceUID", "error"]  # fmt: skip


def input_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DataError(f"--input {root} does not exist; pass a folder of DICOM/PNG/NumPy files or one file.")
    files = sorted(path for path in root.rglob("*") if path.is_file())
    if not files:
        raise DataError(f"--input {root} holds no files; pass a folder of DICOM/PNG/NumPy files.")
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
        return np.clip(pixels, 0, PIXEL_MAX).astype(np.uint16)
    raise RecordError(f"{path} is a {mode} PNG; save the patch as 8- or 16-bit greyscale.", reason="wrong_image_kind")


def read_patch(path: Path, *, size: int) -> tuple[np.ndarray, dict[str, str]]:
    """One file → (patch (size, size) uint16, DICOM identifiers); RecordError says why it cannot be used."""
    suffix = path.suffix.lower()
    if suffix in (".png", ".npy"):
        if suffix == ".png":
            pixels = read_png(path)
        else:
            try:
                pixels = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise RecordError(f"{path} is not a readable .npy array ({exc}).", reason="unreadable_npy") from exc
        try:
            return resize_patch(raw_values(np.asarray(pixels)), size), {}
        except RecordError as error:
            raise RecordError(f"{path}: {error}", reason=error.reason) from error
    # Anything else is tried as DICOM: NBIA downloads name them .dcm, other tools use no suffix.
    patch, meta = patch_from_dicom(path, size=size)
    return patch, {key: meta.get(key) or "" for key in ("PatientID", "SeriesInstanceUID")}


def _file_name(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if root.is_dir() else path.name


def _predict_files(model: Any, files: Sequence[Path], *, root: Path, size: int) -> list[dict[str, Any]]:
    """One batch of files → their rows: read each, then score the readable ones together."""
    rows: list[dict[str, Any]] = []
    patches = []  # (size, size) uint16 each, this batch's only
    for path in files:
        try:
            patch, ids = read_patch(path, size=size)
        except RecordError as error:
            rows.append({"file": _file_name(path, root), "error": f"{error.reason}: {error}"})
            continue
        rows.append({"file": _file_name(path, root), **ids})
        patches.append(patch)
    if not patches:
        return rows
    scored = serving.predict_table(model, np.stack(patches)).itertuples(index=False)  # (n, size, size) in
    for row in rows:
        if "error" not in row:
            output = next(scored)
            label = int(getattr(output, serving.LABEL_COLUMN))
            row |= {
                serving.OUTPUT_COLUMN: float(getattr(output, serving.OUTPUT_COLUMN)),
                serving.LABEL_COLUMN: label,
                "predicted_class": LABEL_NAMES[label],
            }
    return rows


def predict_folder(model_uri: str, root: Path, *, batch_files: int = FILE_BATCH) -> pd.DataFrame:
    """The CSV's rows: one per file, scored or with its error; `batch_files` files in memory at a time."""
    if batch_files < 1:
        raise ValueError(f"batch_files must be at least 1, got {batch_files=}")
    files = input_files(root)
    model = serving.load(model_uri)
    size = serving.patch_size(model)
    rows: list[dict[str, Any]] = []
    for start in range(0, len(files), batch_files):
        rows += _predict_files(model, files[start : start + batch_files], root=root, size=size)
    table = pd.DataFrame(rows, columns=COLUMNS)
    table[serving.LABEL_COLUMN] = table[serving.LABEL_COLUMN].astype("Int64")
    return table


def failure_reasons(table: pd.DataFrame) -> dict[str, int]:
    """How many files were not scored, by reason (the part of `error` before the colon)."""
    failed = table["error"].dropna()
    return dict(Counter(error.split(":", 1)[0] for error in failed))


def log_predictions(table: pd.DataFrame, *, model_uri: str, root: Path, output: Path, experiment: str | None) -> None:
    """A `predict` run: the parameters, counts and the CSV itself."""
    unreadable = int(table["error"].notna().sum())
    with tracking.start_run(run_name="predict", experiment=experiment, tags={tracking.ENTRY_TAG: "predict"}):
        tracking.log_params({"model_uri": model_uri, "input": str(root.resolve()), "output": str(output)})
        refused = {f"refused_{reason}": count for reason, count in failure_reasons(table).items()}
        tracking.log_metrics(
            {"files": len(table), "predicted": len(table) - unreadable, "unreadable": unreadable} | refused
        )
        tracking.log_dataframe(table, output.name)
