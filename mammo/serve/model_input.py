"""What the served model accepts, and the limits that keep one request from exhausting the server.

A request is a table, one row per image, each row in one of three forms (the other cells empty):

    dicom   a cropped-ROI DICOM file: bytes (base64 text in JSON; MLflow decodes binary columns)
    patch   raw little-endian uint16 bytes of a 2-D image (base64 in JSON), square unless the row's
            `shape` is [rows, columns]: the compact form, ~4× smaller than JSON integers
    pixels  a 2-D array (nested lists in JSON) of raw 16-bit grey levels

Values are raw 16-bit grey levels, 0..65535, as `prepare` stores them. Floats whose values all lie
in [0, 1] with a fractional part are rejected rather than guessed at (they look already divided by
65535, and read as raw values they would be near-black); other floats are rounded. Every row is
turned into the patch `prepare` would have made (`dicom.patch_from_dicom` or `dicom.resize_patch`
at the prepared size), so a served image meets the network exactly as training data did.

Limits (`LIMITS`, one place, checked before anything large is allocated): at most 256 rows per
request, DICOM images at most 4096 pixels a side (read from the header before the pixels are
decoded), `patch`/`pixels` arrays at most 2048 a side and at most 8:1 in aspect (a 1×4000 row would
otherwise be padded to a 4000×4000 square). Over a limit the row is refused with a RecordError
naming the limit; the served model answers HTTP 400 with that message. The JSON body itself is
parsed by MLflow's scoring server before this code runs: cap the request size in front of it
(e.g. nginx `client_max_body_size`), as docs/reliability.md says.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mammo.core.errors import RecordError
from mammo.core.pixels import PIXEL_MAX
from mammo.data.dicom import patch_from_dicom, resize_patch
from mammo.data.masks import is_roi_mask

INPUT_DICOM = "dicom"
INPUT_PATCH = "patch"
INPUT_SHAPE = "shape"
INPUT_PIXELS = "pixels"
INPUT_FORMS = (INPUT_DICOM, INPUT_PATCH, INPUT_PIXELS)


@dataclass(frozen=True)
class Limits:
    """Caps on one request; each bounds the memory a request can make the server allocate."""

    max_rows: int = 256
    max_dicom_side: int = 4096
    max_array_side: int = 2048
    max_aspect: float = 8.0


LIMITS = Limits()


def patch_table(patches: np.ndarray) -> pd.DataFrame:
    """Prepared uint16 patches (n, S, S) as the model's compact `patch` column (what Python callers send)."""
    array = np.ascontiguousarray(patches, dtype="<u2")
    return pd.DataFrame({INPUT_PATCH: [patch.tobytes() for patch in array]})


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    return isinstance(value, float) and math.isnan(value)


def _check_side(rows: int, columns: int, *, limit: int, what: str, limits: Limits) -> None:
    if rows < 1 or columns < 1:
        raise RecordError(f"{what} is empty ({rows}×{columns}); send a 2-D image.", reason="bad_pixels")
    if max(rows, columns) > limit:
        raise RecordError(
            f"{what} is {rows}×{columns}, over the limit of {limit} pixels a side; send the cropped region "
            "around the lesion, not a whole mammogram.",
            reason="too_large",
        )
    if max(rows, columns) / min(rows, columns) > limits.max_aspect:
        raise RecordError(
            f"{what} is {rows}×{columns}, more elongated than {limits.max_aspect:g}:1; send a patch around the lesion.",
            reason="too_large",
        )


def raw_values(pixels: np.ndarray) -> np.ndarray:
    """A 2-D numeric array of raw 16-bit grey levels, checked (range, [0, 1] floats) and as uint16."""
    if pixels.ndim != 2 or pixels.size == 0 or not np.issubdtype(pixels.dtype, np.number):
        raise RecordError(
            f"pixels must be a non-empty 2-D array of numbers, got shape {pixels.shape} ({pixels.dtype}).",
            reason="bad_pixels",
        )
    if np.issubdtype(pixels.dtype, np.floating):
        if not np.isfinite(pixels).all():
            raise RecordError("pixel values must be finite numbers (no NaN or infinity).", reason="bad_pixels")
        if pixels.min() >= 0 and pixels.max() <= 1 and not np.array_equal(pixels, np.round(pixels)):
            raise RecordError(
                "pixel values all lie in [0, 1]: they look already scaled. Send raw 16-bit grey levels "
                f"(0..{PIXEL_MAX}): multiply by {PIXEL_MAX} and round.",
                reason="scaled_pixels",
            )
        pixels = np.rint(pixels)
    if pixels.min() < 0 or pixels.max() > PIXEL_MAX:
        raise RecordError(
            f"pixel values must lie in 0..{PIXEL_MAX} (raw 16-bit grey levels), got {pixels.min()}..{pixels.max()}.",
            reason="bad_pixels",
        )
    values = pixels.astype(np.uint16)
    if is_roi_mask(values):
        raise RecordError(
            "the pixels are a binary ROI mask, not a cropped mammogram patch; send the cropped image.",
            reason="roi_mask",
        )
    return values


def _pixels_row(value: Any, *, size: int, limits: Limits) -> np.ndarray:
    if isinstance(value, np.ndarray) and value.dtype == object:
        value = value.tolist()
    if isinstance(value, list):  # check the sides before numpy allocates the whole nested list
        columns = len(value[0]) if value and isinstance(value[0], list | np.ndarray) else 0
        _check_side(len(value), columns, limit=limits.max_array_side, what="the pixel array", limits=limits)
    try:
        pixels = np.asarray(value)
    except (TypeError, ValueError) as error:  # ragged nested lists
        raise RecordError(f"pixels must be a 2-D array of numbers ({error}).", reason="bad_pixels") from error
    if pixels.ndim == 2:
        _check_side(*pixels.shape, limit=limits.max_array_side, what="the pixel array", limits=limits)
    return resize_patch(raw_values(pixels), size)


def _shape_of(shape: Any, byte_count: int) -> tuple[int, int]:
    if _is_empty(shape):
        side = math.isqrt(byte_count // 2)
        if side * side * 2 != byte_count:
            raise RecordError(
                f"a patch of {byte_count} bytes is not a square uint16 image; add its shape [rows, columns].",
                reason="bad_patch",
            )
        return side, side
    try:
        rows, columns = (int(part) for part in (shape.split("x") if isinstance(shape, str) else shape))
    except (TypeError, ValueError) as error:
        raise RecordError(f"shape must be [rows, columns], got {shape!r}.", reason="bad_patch") from error
    if rows * columns * 2 != byte_count:
        raise RecordError(
            f"shape {rows}×{columns} needs {rows * columns * 2} bytes of uint16, the patch has {byte_count}.",
            reason="bad_patch",
        )
    return rows, columns


def _patch_row(value: Any, shape: Any, *, size: int, limits: Limits) -> np.ndarray:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise RecordError(
            f"patch must be binary (base64 in a JSON dataframe_split/records payload, bytes from Python), "
            f"got {type(value).__name__}.",
            reason="bad_patch",
        )
    data = bytes(value)
    rows, columns = _shape_of(shape, len(data))
    _check_side(rows, columns, limit=limits.max_array_side, what="the patch", limits=limits)
    pixels = np.frombuffer(data, dtype="<u2").reshape(rows, columns)
    return resize_patch(raw_values(pixels), size)


def _dicom_row(value: Any, *, size: int, limits: Limits) -> np.ndarray:
    if isinstance(value, str):  # a Python caller passed base64 text instead of bytes
        import base64
        import binascii

        try:
            value = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as error:
            raise RecordError(
                f"column '{INPUT_DICOM}' is not valid base64 ({error}); send base64.b64encode(file_bytes).decode().",
                reason="bad_base64",
            ) from error
    if not isinstance(value, bytes | bytearray):
        raise RecordError(
            f"column '{INPUT_DICOM}' must hold DICOM files (bytes, or base64 in JSON), got {type(value).__name__}.",
            reason="bad_base64",
        )
    return patch_from_dicom(bytes(value), size=size, max_side=limits.max_dicom_side)[0]


def _rows(model_input: Any) -> list[dict[str, Any]]:
    if isinstance(model_input, dict):  # {"inputs": {"pixels": [...]}} arrives as a dict of columns
        model_input = pd.DataFrame({name: list(values) for name, values in model_input.items()})
    if not isinstance(model_input, pd.DataFrame):
        raise RecordError(
            f"expected a table with one of the columns {', '.join(INPUT_FORMS)}, got {type(model_input).__name__}; "
            "prepared patches go in the 'patch' column (mammo.serve.model_input.patch_table).",
            reason="bad_input",
        )
    known = set(INPUT_FORMS) | {INPUT_SHAPE}
    if not known & set(map(str, model_input.columns)) - {INPUT_SHAPE}:
        raise RecordError(
            f"expected a column '{INPUT_DICOM}' (DICOM files), '{INPUT_PATCH}' (uint16 bytes) or "
            f"'{INPUT_PIXELS}' (2-D arrays), got columns {sorted(map(str, model_input.columns))}.",
            reason="bad_input",
        )
    return model_input.to_dict(orient="records")


def patches_from_input(model_input: Any, *, size: int, limits: Limits = LIMITS) -> np.ndarray:
    """Every row → the (size, size) uint16 patch `prepare` would have made; (n, size, size).

    Raises:
        RecordError: naming the row, what is wrong and the fix (a limit, bad base64, not DICOM, a mask).
    """
    rows = _rows(model_input)
    if not rows:
        raise RecordError("the request holds no rows to score.", reason="bad_input")
    if len(rows) > limits.max_rows:
        raise RecordError(
            f"the request holds {len(rows)} rows, over the limit of {limits.max_rows}; split it into smaller requests.",
            reason="too_many_rows",
        )
    converters: dict[str, Callable[[dict[str, Any]], np.ndarray]] = {
        INPUT_DICOM: lambda row: _dicom_row(row[INPUT_DICOM], size=size, limits=limits),
        INPUT_PATCH: lambda row: _patch_row(row[INPUT_PATCH], row.get(INPUT_SHAPE), size=size, limits=limits),
        INPUT_PIXELS: lambda row: _pixels_row(row[INPUT_PIXELS], size=size, limits=limits),
    }
    patches = []
    for number, row in enumerate(rows):
        forms = [form for form in INPUT_FORMS if not _is_empty(row.get(form))]
        try:
            if len(forms) != 1:
                raise RecordError(
                    f"fill exactly one of {', '.join(INPUT_FORMS)} per row, got {forms or 'none'}.", reason="bad_input"
                )
            patches.append(converters[forms[0]](row))
        except RecordError as error:
            raise RecordError(f"row {number}: {error}", reason=error.reason) from error
    return np.stack(patches)
