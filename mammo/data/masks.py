"""ROI masks: told from crops by content, their box, and the region of the mammogram to cut around them.

CBIS-DDSM names crops and masks inconsistently, so a mask is recognised by content (binary) only.
Roi-mode ingest cuts the full mammogram around the mask's bounding box; a full-size mask is
~4000×3000, so the box and the binary check share one pass over the mask's rows
(`binary_mask_extent`) and the caller maps only the region it cuts (`crop_region`).
"""

from __future__ import annotations

import numpy as np

from mammo.core.errors import RecordError


def is_roi_mask(pixels: np.ndarray) -> bool:
    """True for a binary image: only 0 and at most one other value (an empty mask counts).

    Two linear passes, no sort, so it stays cheap on a full-size 4000×3000 mask.
    """
    values = np.asarray(pixels)
    if values.size == 0 or values.min() != 0:
        return False
    top = values.max()
    return top == 0 or int(np.count_nonzero(values)) == int(np.count_nonzero(values == top))


Extent = tuple[int, int, int, int]  # (row0, row1, col0, col1), half-open: the box of a mask's nonzero pixels


def mask_extent(mask: np.ndarray) -> Extent | None:
    """The half-open bounding box of the nonzero pixels of a 2-D mask; None when every pixel is 0."""
    values = np.asarray(mask)
    rows = np.flatnonzero(_any_nonzero(values, axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(_any_nonzero(values[rows[0] : rows[-1] + 1], axis=0))  # only the rows the mask touches
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _any_nonzero(values: np.ndarray, *, axis: int) -> np.ndarray:
    """`np.any` along `axis`; for unsigned integers `max` (≈2× faster on a full-size uint8 mask, same rows)."""
    fast = values.size and np.issubdtype(values.dtype, np.unsignedinteger)
    return values.max(axis=axis) if fast else np.any(values, axis=axis)


def binary_mask_extent(pixels: np.ndarray) -> tuple[bool, Extent | None]:
    """`is_roi_mask` and `mask_extent` of a 2-D image in one go.

    Outside the box of the nonzero pixels every pixel is 0, so the binary check only needs the box:
    a full-size mask costs one pass over its rows instead of five over all its pixels.
    """
    values = np.asarray(pixels)
    if values.ndim != 2 or values.size == 0:
        return is_roi_mask(values), None
    extent = mask_extent(values)
    if extent is None:
        return True, None  # all zero: an empty mask, as is_roi_mask says
    box = values[extent[0] : extent[1], extent[2] : extent[3]]
    lowest = box.min() if box.size == values.size else min(box.min(), 0)  # zeros lie outside a smaller box
    if lowest != 0:
        return False, extent
    top = box.max()
    return bool(int(np.count_nonzero(box)) == int(np.count_nonzero(box == top))), extent


def _span(center: float, length: int, limit: int) -> tuple[int, int]:
    """A window of `length` around `center`, shifted (not shrunk) to stay inside 0..limit where possible."""
    start = round(center - length / 2)
    start = min(max(start, 0), max(limit - length, 0))
    return start, min(start + length, limit)


def crop_around_mask(full: np.ndarray, mask: np.ndarray, *, margin: float = 0.25, square: bool = True) -> np.ndarray:
    """Cut the full mammogram around the mask's bounding box plus `margin` of context on each side.

    The box grows by `margin` × its height (top and bottom) and × its width (left and right); with
    `square` it then grows to a square around the same centre, so the later resize needs little
    padding. A box that runs past the image edge is shifted back inside, then clipped to the image.

    Raises:
        RecordError: reason ``wrong_image_kind`` if the mask's shape differs from the image's or the mask is empty.
    """
    return full[crop_region(full.shape, mask, margin=margin, square=square)]


def crop_region(
    shape: tuple[int, ...], mask: np.ndarray, *, margin: float = 0.25, square: bool = True,
    extent: Extent | None = None,
) -> tuple[slice, slice]:  # fmt: skip
    """The (rows, columns) slices `crop_around_mask` cuts from an image of `shape`: the box alone,
    so a caller can map only that region of a stored image (`StoredImage.to_uint16(region)`).
    `extent` is the mask's `mask_extent` when the caller has it already."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin=}")
    if tuple(shape) != mask.shape:
        raise RecordError(
            f"ROI mask shape {mask.shape} does not match the full mammogram {tuple(shape)}; "
            "the mask belongs to another image. Re-download the series.",
            reason="wrong_image_kind",
        )
    extent = extent or mask_extent(mask)
    if extent is None:
        raise RecordError(
            "ROI mask is empty (all zero): there is no abnormality to cut out.", reason="wrong_image_kind"
        )
    top, bottom, left, right = extent
    box_rows, box_cols = round((bottom - top) * (1 + 2 * margin)), round((right - left) * (1 + 2 * margin))
    if square:
        box_rows = box_cols = max(box_rows, box_cols)
    r0, r1 = _span((top + bottom) / 2, box_rows, shape[0])
    c0, c1 = _span((left + right) / 2, box_cols, shape[1])
    return slice(r0, r1), slice(c0, c1)
