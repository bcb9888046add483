"""DICOM in, pixels and metadata out (MONAI's `ImageReader.get_data` idea: `(array, dict)`).

Every pixel goes through pydicom's own `apply_modality_lut` and `apply_voi_lut` rather than a
re-derivation, MONOCHROME1 is inverted, and the result is mapped onto the full uint16 range so
that 16-bit data keeps every grey level. Crops and ROI masks are told apart by content (a mask is
binary, `masks.is_roi_mask`), never by file or folder name: CBIS-DDSM's names for them are inconsistent.

`patch_from_dicom` is the one crop-mode preprocessing path: `prepare` builds the training
patches with it and `predict`/serving call it on uploaded files, so both see identical pixels.
It refuses a full mammogram (CBIS-DDSM's SeriesDescription "full mammogram images") from the
header, before decoding: resized to a patch, a whole breast would be scored as if it were a lesion.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from skimage.transform import resize

from mammo.core.errors import RecordError
from mammo.core.pixels import PIXEL_MAX
from mammo.data.masks import is_roi_mask

HEADER_KEYWORDS = (
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SeriesDescription",
    "Rows",
    "Columns",
    "BitsStored",
    "PhotometricInterpretation",
)
_REDOWNLOAD = "Re-download the series from TCIA (the file is truncated or is not DICOM)."
FULL_MAMMOGRAM = "full mammogram"  # in CBIS-DDSM's SeriesDescription of a whole-breast image

Source = str | Path | bytes | BinaryIO


def _source_name(source: Source) -> str:
    if isinstance(source, str | Path):
        return str(source)
    if isinstance(source, bytes | bytearray):
        return "<DICOM bytes>"
    return str(getattr(source, "name", "<DICOM stream>"))


def _open(source: Source, *, stop_before_pixels: bool) -> pydicom.Dataset:
    """Parse a DICOM file, turning every parser failure into one RecordError with the fix."""
    name = _source_name(source)
    target = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    try:
        return pydicom.dcmread(target, stop_before_pixels=stop_before_pixels)
    except FileNotFoundError as exc:
        raise RecordError(f"{name}: file not found. Check the path.", reason="missing_file") from exc
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise RecordError(
            f"{name} is not a readable DICOM file ({exc}). {_REDOWNLOAD}", reason="unreadable_dicom"
        ) from exc


def _header_of(ds: pydicom.Dataset) -> dict[str, Any]:
    header: dict[str, Any] = {}
    for keyword in HEADER_KEYWORDS:
        value = ds.get(keyword)
        header[keyword] = (
            None if value is None else (int(value) if keyword in ("Rows", "Columns", "BitsStored") else str(value))
        )
    meta = getattr(ds, "file_meta", None)
    header["TransferSyntaxUID"] = (
        str(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta else None
    )
    return header


def read_header(path: str | Path | bytes | BinaryIO) -> dict[str, Any]:
    """Header fields used to index a tree (keys are DICOM keywords; absent ones are None).

    Stops before the pixel data, so indexing thousands of mammograms reads kilobytes, not gigabytes.
    """
    return _header_of(_open(path, stop_before_pixels=True))


def _stored_range(ds: pydicom.Dataset) -> tuple[float, float]:
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0**bits - 1


def _lut_range(item: pydicom.Dataset) -> tuple[float, float]:
    return 0.0, 2.0 ** int(item.LUTDescriptor[2]) - 1


def _has_voi(ds: pydicom.Dataset) -> bool:
    return bool(ds.get("VOILUTSequence")) or (ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None)


def _output_range(ds: pydicom.Dataset, *, voi: bool) -> tuple[float, float]:
    """Nominal value range after the LUTs, mirroring how pydicom sizes its own outputs.

    Mapping this range (not the image's own min/max) onto uint16 keeps intensities comparable
    across images: a 16-bit image without LUTs comes out unchanged.
    """
    if voi and ds.get("VOILUTSequence") and ds.VOILUTSequence[0].get("LUTDescriptor") is not None:
        return _lut_range(ds.VOILUTSequence[0])
    if ds.get("ModalityLUTSequence"):
        return _lut_range(ds.ModalityLUTSequence[0])
    low, high = _stored_range(ds)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        low, high = sorted((low * slope + intercept, high * slope + intercept))
    return low, high


def _to_uint16(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if low == 0 and high == PIXEL_MAX and values.dtype == np.uint16:
        return values.copy()
    # The same float64 steps as `rint(clip((values - low) * scale))`, in place: one temporary, not five.
    scaled = values.astype(np.float64)
    scaled -= low
    scaled *= PIXEL_MAX / max(high - low, 1e-12)
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, PIXEL_MAX, out=scaled)
    return scaled.astype(np.uint16)


def _decode(ds: pydicom.Dataset, name: str) -> np.ndarray:
    if "PixelData" not in ds:
        raise RecordError(f"{name} has no Pixel Data. {_REDOWNLOAD}", reason="unreadable_dicom")
    try:
        # Uncompressed data: a read-only view of the bytes just read, not a copy (nothing here writes to it).
        ds.pixel_array_options(view_only=True)
        return ds.pixel_array
    except (ValueError, RuntimeError, NotImplementedError, EOFError, AttributeError, KeyError) as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise RecordError(
            f"{name}: pixel data cannot be decoded (transfer syntax {syntax}: {exc}). "
            f"{_REDOWNLOAD} If the file is intact, install the decoder pydicom names above (e.g. pylibjpeg plugins).",
            reason="unreadable_dicom",
        ) from exc


@dataclass(frozen=True)
class StoredImage:
    """One decoded greyscale frame before the LUTs, with what `read_pixels` needs to map it.

    Splitting decode from mapping lets a caller map only the region it keeps: roi-mode ingest
    maps the crop of a 4000×3000 mammogram, not the whole image, and checks an ROI mask on its
    stored values (`order_kept_values`).
    """

    stored: np.ndarray  # (rows, columns) as decoded, before any LUT
    header: pydicom.Dataset  # the dataset without its Pixel Data (the LUTs read it)
    name: str
    photometric: str
    voi: bool
    value_range: tuple[float, float]  # nominal output range mapped onto 0..PIXEL_MAX

    @property
    def shape(self) -> tuple[int, int]:
        return self.stored.shape  # type: ignore[return-value]

    def to_uint16(self, region: tuple[slice, slice] | None = None) -> np.ndarray:
        """The LUTs → MONOCHROME1 inversion → uint16 mapping of `region` (default: the whole image).

        Every step is elementwise, so mapping a region gives exactly that region of the mapped image.
        """
        stored = self.stored if region is None else self.stored[region]
        values = apply_modality_lut(stored, self.header)
        if self.voi:
            values = apply_voi_lut(values, self.header, index=0)
        low, high = self.value_range
        if self.photometric == "MONOCHROME1":
            values = (low + high) - values.astype(np.float64)
        return _to_uint16(values, low, high)

    def order_kept_values(self) -> np.ndarray:
        """Stored values wherever mapping them to uint16 keeps zero at zero and never merges two values.

        True for unsigned MONOCHROME2 data without LUTs or rescale, at most 16 bits, values within
        BitsStored: the mapping is then `rint(v × 65535 / (2^bits − 1))`, strictly increasing with
        0 → 0, so `is_roi_mask` and the mask's bounding box come out the same on these values as on
        `to_uint16()`, without a float64 pass over a full-size mask. Otherwise the mapped image.
        """
        low, high = self.value_range
        plain = (
            self.photometric == "MONOCHROME2" and not self.voi and low == 0 and high <= PIXEL_MAX
            and int(self.header.get("PixelRepresentation", 0)) == 0 and "ModalityLUTSequence" not in self.header
            and "RescaleSlope" not in self.header and np.issubdtype(self.stored.dtype, np.unsignedinteger)
        )  # fmt: skip
        if plain and (np.iinfo(self.stored.dtype).max <= high or self.stored.size == 0 or self.stored.max() <= high):
            return self.stored  # (the scan is skipped when the dtype cannot exceed BitsStored: 8/8, 16/16 bits)
        return self.to_uint16()

    def meta(self) -> dict[str, Any]:
        meta = _header_of(self.header)
        meta.update(
            source=self.name,
            shape=self.shape,
            value_range=self.value_range,
            modality_lut="ModalityLUTSequence" in self.header or "RescaleSlope" in self.header,
            voi_lut=self.voi,
            inverted=self.photometric == "MONOCHROME1",
        )
        return meta


def _refuse_full_mammogram(ds: pydicom.Dataset, name: str) -> None:
    description = str(ds.get("SeriesDescription") or "").strip()
    if FULL_MAMMOGRAM in description.lower():
        size = f"{ds.get('Rows', '?')}×{ds.get('Columns', '?')}"
        raise RecordError(
            f"{name} is a full mammogram (SeriesDescription '{description}', {size} pixels), not a cropped lesion "
            "patch; pass the 'cropped images' DICOM of its abnormality instead (or cut patches from full "
            "mammograms with `prepare --patch roi` and the ROI masks).",
            reason="full_mammogram",
        )


def read_stored(source: Source, *, max_side: int | None = None, lazy: bool = False, crop: bool = False) -> StoredImage:
    """Decode one greyscale DICOM frame without mapping it (`read_pixels` = this + `to_uint16`).

    `lazy` (a file path, no `max_side`): when the file holds one uncompressed little-endian frame whose
    stored values are exactly what pydicom would decode (see `_mapped_frame`), the pixels are a
    read-only memory map of the file, so only the pages of the region a caller maps are ever read:
    roi-mode ingest reads a ~1 MB band of a 30 MB mammogram. Any other file is decoded as usual.

    `crop` (a cropped lesion is expected): a full mammogram is refused from its header, undecoded.

    Raises:
        RecordError: as `read_pixels`.
    """
    if lazy and max_side is None and not crop and isinstance(source, str | Path):
        mapped = _mapped_frame(Path(source))
        if mapped is not None:
            return mapped
    name = _source_name(source)
    ds = _open(source, stop_before_pixels=False)
    if crop:
        _refuse_full_mammogram(ds, name)
    if max_side is not None:
        rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        if max(rows, columns) > max_side:
            raise RecordError(
                f"{name} is {rows}×{columns} pixels, over the limit of {max_side} a side; send the cropped-ROI "
                "image, not a full mammogram.",
                reason="too_large",
            )
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise RecordError(
            f"{name}: PhotometricInterpretation {photometric or 'missing'} is not a greyscale mammogram "
            "(MONOCHROME1/MONOCHROME2 expected). Pass a CBIS-DDSM DICOM.",
            reason="wrong_image_kind",
        )
    stored = _decode(ds, name)
    if stored.ndim != 2:
        raise RecordError(f"{name}: expected one 2-D frame, got shape {stored.shape}.", reason="wrong_image_kind")
    del ds.PixelData  # decoded: a cached image (roi-mode ingest keeps two) holds the pixels once
    voi = _has_voi(ds)
    return StoredImage(stored, ds, name, photometric, voi, _output_range(ds, voi=voi))


_NATIVE_LITTLE_ENDIAN = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_DEFER_BYTES = 4096  # elements larger than this are left in the file until used (the Pixel Data)


def _mapped_frame(path: Path) -> StoredImage | None:
    """The file's frame as a memory map, or None when anything is not plain (then it is decoded as usual).

    Plain: one frame, one sample, unsigned 8 or 16 bits all stored (pydicom then changes nothing: no
    unused-bit masking, sign or colour handling), uncompressed little-endian, MONOCHROME1/2, and the
    Pixel Data wholly inside the file. Any parser error also gives None, so the usual path raises it.
    """
    try:
        ds = pydicom.dcmread(path, defer_size=_DEFER_BYTES)
        element = ds.get_item(0x7FE00010, keep_deferred=True)  # Pixel Data, not read
        meta = getattr(ds, "file_meta", None)
        rows, columns, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
        plain = (
            meta is not None and meta.get("TransferSyntaxUID") in _NATIVE_LITTLE_ENDIAN
            and str(ds.get("PhotometricInterpretation", "")) in ("MONOCHROME1", "MONOCHROME2")
            and int(ds.get("SamplesPerPixel", 1)) == 1 and int(ds.get("NumberOfFrames") or 1) == 1
            and bits in (8, 16) and int(ds.BitsStored) == bits and int(ds.get("PixelRepresentation", 0)) == 0
            and rows > 0 and columns > 0 and isinstance(element, RawDataElement) and element.value is None
            and element.VR in ("OB", "OW", None) and element.length != 0xFFFFFFFF
            and element.length >= rows * columns * bits // 8
            and element.value_tell + rows * columns * bits // 8 <= path.stat().st_size
        )  # fmt: skip
        if not plain:
            return None
        frame = np.memmap(path, dtype=f"<u{bits // 8}", mode="r", offset=element.value_tell, shape=(rows, columns))
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError):
        # whatever is wrong, the usual path reads the file again and reports it
        return None
    del ds.PixelData
    photometric, voi = str(ds.PhotometricInterpretation), _has_voi(ds)
    return StoredImage(np.asarray(frame), ds, str(path), photometric, voi, _output_range(ds, voi=voi))


def read_pixels(
    source: Source, *, max_side: int | None = None, crop: bool = False
) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode one greyscale DICOM to a 2-D uint16 array plus its metadata.

    Steps: decode (compressed transfer syntaxes through the pylibjpeg plugins) →
    `apply_modality_lut` → `apply_voi_lut` only when a VOI LUT or window is present → invert
    MONOCHROME1 so that bright always means dense → map the nominal output range (e.g. 0..4095
    for 12-bit data, 0..65535 for 16-bit) linearly onto 0..65535.

    `max_side` (the served model's limit) refuses a larger image from its header, before the
    pixels are decoded; so does `crop` a full mammogram.

    Raises:
        RecordError: reason ``unreadable_dicom`` for non-DICOM/truncated/undecodable input,
            ``wrong_image_kind`` for colour or multi-frame images, ``too_large`` past `max_side`,
            ``full_mammogram`` with `crop`.
    """
    image = read_stored(source, max_side=max_side, crop=crop)
    return image.to_uint16(), image.meta()


def resize_patch(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize to (size, size) uint16 with anti-aliasing, keeping the aspect ratio.

    A non-square image is first padded on its short side (symmetric reflection, centred) to a
    square, so a lesion is never stretched and no artificial constant border appears; the square
    is then resized with bilinear interpolation and Gaussian anti-aliasing (skimage,
    `preserve_range`), rounded and clipped back into uint16.
    """
    image = np.asarray(pixels)
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"resize_patch needs a non-empty 2-D image, got shape {image.shape}")
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size=}")
    rows, cols = image.shape
    side = max(rows, cols)
    pad_rows, pad_cols = side - rows, side - cols
    if pad_rows or pad_cols:
        pad = ((pad_rows // 2, pad_rows - pad_rows // 2), (pad_cols // 2, pad_cols - pad_cols // 2))
        image = np.pad(image, pad, mode="symmetric")
    if side == size:
        return np.clip(image, 0, PIXEL_MAX).astype(np.uint16)
    out = resize(
        image.astype(np.float32), (size, size), order=1, mode="reflect", anti_aliasing=side > size, preserve_range=True
    )
    return np.clip(np.rint(out), 0, PIXEL_MAX).astype(np.uint16)  # (size, size)


def patch_from_dicom(
    source: Source, *, size: int = 150, max_side: int | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Crop-mode preprocessing of one cropped-ROI DICOM: `read_pixels` → `resize_patch`.

    Raises:
        RecordError: reason ``roi_mask`` when the file is a binary ROI mask rather than a cropped
            image (CBIS-DDSM's file names mix them up), ``full_mammogram`` for a whole-breast image,
            besides the reasons of `read_pixels`.
    """
    pixels, meta = read_pixels(source, max_side=max_side, crop=True)
    if is_roi_mask(pixels):
        raise RecordError(
            f"{meta['source']} is an ROI mask (a binary image), not a cropped mammogram patch. "
            "Pass the cropped-image DICOM of the same series instead.",
            reason="roi_mask",
        )
    meta["patch_size"] = size
    return resize_patch(pixels, size), meta
