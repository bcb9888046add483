"""The synthetic source: a generated CBIS-DDSM tree in the real TCIA layout (the default dataset).

The default run must go through the same reader as a real download, so this writes what TCIA
ships, quirks included: DICOM full mammograms, full-size binary ROI masks and cropped ROI images
laid out as the NBIA downloader writes them (`<case>/<date>-DDSM-<n>/1-<description>-<n>/00000N.dcm`,
folder and file names that do not match the CSV's), and the four case-description CSVs with their
real column names, CRLF records, the embedded newline in one path field, and the inconsistent
`000000`/`000001` naming of crop and mask inside a shared series. A reader must therefore index
files by their UIDs and tell crop from mask by content, exactly as with real data.

Patients have 1–3 abnormalities (masses or calcification clusters), each seen in CC and MLO
views; the official train/test split is by patient. The pixels come from `phantom`; everything is
deterministic per seed on one machine, and `generate_portable_tree` (what `prepare` uses) draws the
same bytes on every x86-64 machine with AVX2 or better, AVX-512 included.
"""

from __future__ import annotations

import argparse
import csv
import os
import struct
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from tqdm import tqdm

from mammo import __version__
from mammo.core.errors import ConfigError, DataError, MammoError
from mammo.data import phantom
from mammo.data.cohort import COLUMNS, MIN_CASES, Abnormality, plan_abnormalities

DEFAULT_CASES = 1120  # case rows (abnormality × view): ~900 train / ~200 test patches, 10–15 s to generate
DESCRIPTION = {"full": "full mammogram images", "mask": "ROI mask images", "crop": "cropped images"}
UID_ROOT = "mammo.synthetic"  # entropy prefix: UIDs depend on (seed, case, role) only
IMPLEMENTATION_UID = generate_uid(entropy_srcs=[UID_ROOT, "implementation", __version__])
ARTEFACT_RATE = 0.05  # lesions (either class) with a bright speck or vessel nearby: decorrelates max/std from class
MASS_DECOY_RATE = 0.5  # masses with a few stray specks nearby, so that bright specks alone do not mean "calcification"

_KINDS, _SPLITS = {"mass": "mass", "calcification": "calc"}, {"train": "Training", "test": "Test"}
CSV_FILES = {
    (kind, split): f"{short}_case_description_{split}_set.csv" for kind, short in _KINDS.items() for split in _SPLITS
}
COLLECTION = {(kind, split): f"{short.title()}-{_SPLITS[split]}" for kind, short in _KINDS.items() for split in _SPLITS}


def generate_tree(
    out_dir: str | Path, *, cases: int = DEFAULT_CASES, seed: int = 0, progress: bool = False, scale: float = 1.0
) -> Path:
    """Write a synthetic CBIS-DDSM tree (four CSVs + DICOMs) under `out_dir` and return it.

    Args:
        out_dir: an empty or missing folder; the CSVs go at its top, the DICOMs in case folders.
        cases: number of case rows (abnormality × view) across the four CSVs.
        seed: same seed, byte-identical pixels and CSVs on one machine (across machines: `generate_portable_tree`).
        progress: show a progress bar per patient.
        scale: full-mammogram side relative to the default 400–560 px tall; 10 gives CBIS-DDSM's full
            size (≈ 4000–5600 × 2200–3800, 16-bit, ~30 MB a file) for the ingest benchmark. Lesions and
            crops keep their pixel size. 1.0 (the default) draws exactly the default tree.
    """
    _check_options(cases=cases, seed=seed, scale=scale)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty: generate the synthetic tree into a new or empty folder.")
    out.mkdir(parents=True, exist_ok=True)
    units: dict[tuple[int, str], list[Abnormality]] = defaultdict(list)
    for abnormality in plan_abnormalities(np.random.default_rng(seed), cases=cases):
        units[abnormality.patient, abnormality.kind].append(abnormality)
    rows: dict[tuple[str, str], list[tuple[tuple, list[str]]]] = defaultdict(list)
    for (patient, kind), abnormalities in tqdm(units.items(), disable=not progress, desc="synthetic", unit="patient"):
        rng = np.random.default_rng([seed, patient, kind == "mass"])
        for key, row in _write_patient(out, rng, abnormalities, seed=seed, scale=scale):
            rows[kind, abnormalities[0].split].append((key, row))
    for (kind, split), name in CSV_FILES.items():
        _write_csv(out / name, COLUMNS[kind], [row for _, row in sorted(rows[kind, split])])
    return out


def _check_options(*, cases: object, seed: object, scale: object) -> None:
    if isinstance(cases, bool) or not isinstance(cases, int) or cases < MIN_CASES:
        raise ConfigError(
            f"cases must be an integer ≥ {MIN_CASES} (a mass and a calcification patient per split); got {cases!r}."
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer; got {seed!r}.")
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not 1 <= scale <= 16:
        raise ConfigError(f"scale must be a number between 1 and 16 (10: full-size mammograms); got {scale!r}.")


# --- the same bytes on every machine -------------------------------------------------------------


PORTABLE_SIMD_CEILING = "X86_V3"  # numpy's AVX2 dispatch target: what `portable_numpy_env` lets numpy use at most


def portable_numpy_env() -> dict[str, str]:
    """`os.environ` for a child process whose numpy uses its AVX2 (x86-64-v3) code paths at most.

    numpy chooses its SIMD code for exp, sin, cos, arctan2, hypot… when it is imported, and its AVX-512
    paths round differently in the last bits from the AVX2 ones; after quantisation to 16 bits that
    changed 1001 of the default tree's 3180 files between an AVX-512 Xeon and an AVX2 EPYC (seed 0),
    so the "same" synthetic default had two digests. Turning off numpy's dispatch targets above
    X86_V3 that this CPU has makes an AVX-512 machine draw the AVX2 machine's tree, byte for byte
    (the Xeon's portable draw prepared the EPYC's digest, 5c6edf627878728d). A CPU without AVX2, or a non-x86 one, may still draw other bytes.
    """
    env = dict(os.environ)
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # another numpy layout: leave its dispatch alone
        return env
    if PORTABLE_SIMD_CEILING not in __cpu_dispatch__:
        return env
    above = __cpu_dispatch__[__cpu_dispatch__.index(PORTABLE_SIMD_CEILING) + 1 :]
    disabled = [name for name in above if __cpu_features__.get(name)]
    if disabled:
        env["NPY_DISABLE_CPU_FEATURES"] = " ".join([*env.get("NPY_DISABLE_CPU_FEATURES", "").split(), *disabled])
    return env


def generate_portable_tree(
    out_dir: str | Path, *, cases: int = DEFAULT_CASES, seed: int = 0, progress: bool = False, scale: float = 1.0
) -> Path:
    """`generate_tree` in a child process with `portable_numpy_env`: the same tree on every AVX2+ machine.

    The child dies with this process (it watches its parent), so a killed `prepare` leaves no writer behind.
    """
    _check_options(cases=cases, seed=seed, scale=scale)
    out = Path(out_dir)
    command = [sys.executable, "-m", "mammo.data.synthetic", str(out), "--cases", str(cases), "--seed", str(seed),
               "--scale", repr(float(scale)), *(["--progress"] if progress else [])]  # fmt: skip
    finished = subprocess.run(command, env=portable_numpy_env(), stdout=subprocess.DEVNULL, check=False)
    if finished.returncode != 0:
        raise DataError(
            f"generating the synthetic tree into {out} failed (exit status {finished.returncode}; its error is "
            "printed above). Free disk space or choose another folder, then run again."
        )
    return out


def main(argv: list[str] | None = None) -> int:
    """The child of `generate_portable_tree` (not a user entry point: prepare generates the tree itself)."""
    parser = argparse.ArgumentParser(description="write a synthetic CBIS-DDSM tree (used by prepare)")
    parser.add_argument("out")
    parser.add_argument("--cases", type=int, default=DEFAULT_CASES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    parent = os.getppid()

    def die_with_parent() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=die_with_parent, daemon=True).start()
    try:
        generate_tree(args.out, cases=args.cases, seed=args.seed, progress=args.progress, scale=args.scale)
    except MammoError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _write_patient(
    out: Path, rng: np.random.Generator, abnormalities: list[Abnormality], *, seed: int, scale: float = 1.0
) -> list[tuple[tuple, list[str]]]:
    """Render and write one patient's images of one collection; return its CSV rows with sort keys."""
    by_image: dict[tuple[str, str], list[Abnormality]] = defaultdict(list)
    for abnormality in abnormalities:
        for view in abnormality.views:
            by_image[abnormality.side, view].append(abnormality)
    looks = {a: _look(rng, a) for a in abnormalities}  # size and contrast shared by both views
    rows = []
    for (side, view), present in sorted(by_image.items()):
        full, rois, boxes = _render_image(rng, present, looks, side=side, view=view, scale=scale)
        case = f"{COLLECTION[present[0].kind, present[0].split]}_{present[0].patient_id}_{side}_{view}"
        uids = _write_series(
            out, rng, [(full, "full")], case=case, key="full", folder="full", side=side, view=view, seed=seed
        )
        image_path = f"{case}/{uids}/000000.dcm"
        for abnormality, roi, box in zip(present, rois, boxes, strict=True):
            crop = full[box[0] : box[1], box[2] : box[3]]
            mask = roi.astype(np.uint8) * 255
            crop_path, mask_path = _write_roi(
                out, rng, crop=crop, mask=mask, case=f"{case}_{abnormality.number}", separate=abnormality.separate_mask,
                kind=abnormality.kind, side=side, view=view, seed=seed,
            )  # fmt: skip
            key = (abnormality.patient, side, view, abnormality.number)
            rows.append((key, abnormality.csv_row(view=view, paths=(image_path, crop_path, mask_path))))
    return rows


def _look(rng: np.random.Generator, abnormality: Abnormality) -> dict[str, float]:
    """Per-lesion size and contrast (the subtlety column drives the contrast)."""
    subtlety = abnormality.subtlety
    if abnormality.kind == "mass":
        return {"size": rng.uniform(20, 60), "contrast": rng.uniform(0.06, 0.12) + 0.03 * subtlety}
    return {"size": rng.uniform(20, 60), "contrast": rng.uniform(0.12, 0.2) + 0.04 * subtlety}


def _render_image(
    rng: np.random.Generator,
    present: list[Abnormality],
    looks: dict[Abnormality, dict[str, float]],
    *,
    side: str,
    view: str,
    scale: float = 1.0,
) -> tuple[np.ndarray, list[np.ndarray], list[phantom.Box]]:
    """One full mammogram (uint16) with its abnormalities, their ROI masks and crop boxes."""
    height = int(rng.integers(400, 560))
    if scale != 1:  # the same draws as the default, only the image grows
        height = round(height * scale)
    width = int(height * rng.uniform(0.55, 0.68))
    image, radius = phantom.render_breast(rng, height=height, width=width, view=view, density=present[0].density)
    rois = []
    for abnormality in present:
        look = looks[abnormality]
        size, contrast = look["size"] * rng.uniform(0.9, 1.1), look["contrast"] * rng.uniform(0.85, 1.15)
        centre = phantom.place_lesion(rng, radius, shape=image.shape, extent=int(size * 1.6) + 8)
        shape, spread = abnormality.descriptors
        if abnormality.kind == "mass":
            roi = phantom.draw_mass(
                rng, image, centre=centre, radius=size, shape=shape, margins=spread, contrast=contrast
            )
            if rng.random() < MASS_DECOY_RATE:
                phantom.add_mass_decoys(rng, image, roi)
        else:
            roi = phantom.draw_calcifications(
                rng, image, centre=centre, extent=size, calc_type=shape, distribution=spread, contrast=contrast
            )
        if rng.random() < ARTEFACT_RATE:
            phantom.add_artefact(rng, image, roi)
        rois.append(roi)
    boxes = [phantom.crop_box(rng, roi) for roi in rois]
    pixels = phantom.to_uint16(rng, image)
    if side == "RIGHT":  # mirror: the chest wall on the right edge
        pixels, rois = pixels[:, ::-1].copy(), [roi[:, ::-1] for roi in rois]
        boxes = [(b[0], b[1], width - b[3], width - b[2]) for b in boxes]
    return pixels, rois, boxes


def _uid(seed: int, case: str, role: str) -> str:
    return generate_uid(entropy_srcs=[UID_ROOT, str(seed), case, role])


def _write_series(
    out: Path, rng: np.random.Generator, images: list[tuple[np.ndarray, str]], *, case: str, key: str, folder: str,
    side: str, view: str, seed: int,
) -> str:  # fmt: skip
    """Write `images` ((pixels, role) in instance order) as one study/series; return `<study>/<series>` UIDs.

    On disk: NBIA's `<case>/<MM-DD-YYYY>-DDSM-<n>/1-<folder's description>-<n>/00000N.dcm`, where <n>
    is the last five digits of the study/series UID and the folder takes one description for all its
    files, while each file's SeriesDescription says what it holds.
    """
    study, series = _uid(seed, case, f"{key}-study"), _uid(seed, case, f"{key}-series")
    month, day = int(rng.integers(1, 13)), int(rng.integers(1, 29))
    where = out / case / f"{month:02d}-{day:02d}-2016-DDSM-{study[-5:]}" / f"1-{DESCRIPTION[folder]}-{series[-5:]}"
    for number, (pixels, role) in enumerate(images):
        _write_dicom(
            where / f"{number:06d}.dcm", pixels, case=case, study=study, series=series, instance=number + 1,
            sop=_uid(seed, case, f"{key}-{role}"), description=DESCRIPTION[role], date=f"2016{month:02d}{day:02d}",
            side=side, view=view,
        )  # fmt: skip
    return f"{study}/{series}"


def _write_roi(
    out: Path, rng: np.random.Generator, *, crop: np.ndarray, mask: np.ndarray, case: str, separate: bool, kind: str,
    side: str, view: str, seed: int,
) -> tuple[str, str]:  # fmt: skip
    """Write one abnormality's crop and ROI mask; return their official CSV paths (crop, mask).

    Usually both share one series, and the CSV names the crop 000000 and the mask 000001 (mass) or
    the other way round (calcification), while on disk the file names and the folder's description
    are drawn at random, as in real downloads. Some mass masks get a study and series of their own.
    """

    def write(images: list[tuple[np.ndarray, str]], key: str, folder: str) -> str:
        return _write_series(out, rng, images, case=case, key=key, folder=folder, side=side, view=view, seed=seed)

    if separate:
        return (
            f"{case}/{write([(crop, 'crop')], 'crop', 'crop')}/000000.dcm",
            f"{case}/{write([(mask, 'mask')], 'mask', 'mask')}/000000.dcm",
        )
    images = [(crop, "crop"), (mask, "mask")][:: int(rng.choice([1, -1]))]  # on disk, unrelated to the CSV's naming
    uids = write(images, "roi", str(rng.choice(["crop", "mask"])))
    crop_name, mask_name = ("000000.dcm", "000001.dcm") if kind == "mass" else ("000001.dcm", "000000.dcm")
    return f"{case}/{uids}/{crop_name}", f"{case}/{uids}/{mask_name}"


def _write_dicom(
    path: Path, pixels: np.ndarray, *, case: str, study: str, series: str, sop: str, instance: int,
    description: str, date: str, side: str, view: str,
) -> None:  # fmt: skip
    """Write one uncompressed MONOCHROME2 Secondary Capture MG image with CBIS-DDSM-like headers."""
    bits = pixels.dtype.itemsize * 8
    meta = [
        ("FileMetaInformationVersion", b"\x00\x01"), ("MediaStorageSOPClassUID", SecondaryCaptureImageStorage),
        ("MediaStorageSOPInstanceUID", sop), ("TransferSyntaxUID", ExplicitVRLittleEndian),
        ("ImplementationClassUID", IMPLEMENTATION_UID), ("ImplementationVersionName", f"MAMMO_{__version__}"),
    ]  # fmt: skip
    header = [
        ("SpecificCharacterSet", "ISO_IR 100"), ("SOPClassUID", SecondaryCaptureImageStorage), ("SOPInstanceUID", sop),
        ("StudyDate", date), ("ContentDate", date), ("StudyTime", "120000"), ("ContentTime", "120000"),
        ("AccessionNumber", ""), ("Modality", "MG"), ("ConversionType", "WSD"), ("ReferringPhysicianName", ""),
        ("SeriesDescription", description), ("PatientName", case), ("PatientID", case), ("PatientBirthDate", ""),
        ("PatientSex", ""), ("BodyPartExamined", "BREAST"), ("StudyInstanceUID", study),
        ("SeriesInstanceUID", series), ("StudyID", "DDSM"), ("SeriesNumber", "1"), ("InstanceNumber", str(instance)),
        ("PatientOrientation", view), ("Laterality", side[0]), ("SamplesPerPixel", 1),
        ("PhotometricInterpretation", "MONOCHROME2"), ("Rows", pixels.shape[0]), ("Columns", pixels.shape[1]),
        ("BitsAllocated", bits), ("BitsStored", bits), ("HighBit", bits - 1), ("PixelRepresentation", 0),
    ]  # fmt: skip
    if path.exists():
        raise FileExistsError(f"{path} was about to be written twice (a UID collision); try another seed.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_dicom(meta, header, pixels=pixels))


_ENCODED_VRS = {"OB", "OW", "US", "UL", "UI", "AE", "CS", "DA", "DS", "IS", "LO", "PN", "SH", "TM"}


def encode_dicom(meta: list[tuple[str, object]], header: list[tuple[str, object]], *, pixels: np.ndarray) -> bytes:
    """A DICOM Part 10 file in Explicit VR Little Endian: preamble, file meta group, dataset, pixels.

    pydicom's writer spends about 2 ms per file on generic element handling, which is most of a
    default tree's time; this writes the same bytes for the few fixed element types used here
    (tests compare it byte for byte with `pydicom.dcmwrite`). Elements are given by keyword.
    """
    group = b"".join(_element(keyword, value) for keyword, value in meta)
    length = _element("FileMetaInformationGroupLength", len(group))
    ordered = sorted(header, key=lambda item: tag_for_keyword(item[0]))
    data = np.ascontiguousarray(pixels, dtype=f"<u{pixels.dtype.itemsize}").tobytes()
    pixel_data = _element("PixelData", data, vr="OW" if pixels.dtype.itemsize == 2 else "OB")
    return b"\0" * 128 + b"DICM" + length + group + b"".join(_element(k, v) for k, v in ordered) + pixel_data


def _element(keyword: str, value: object, *, vr: str | None = None) -> bytes:
    """One explicit-VR little-endian element (only the VRs this module writes)."""
    tag = tag_for_keyword(keyword)
    vr = vr or dictionary_VR(tag)
    if vr not in _ENCODED_VRS:
        raise ValueError(f"encode_dicom does not write VR {vr} ({keyword}); use pydicom for such elements.")
    if isinstance(value, bytes):
        data = value
    elif vr in ("US", "UL"):
        data = struct.pack("<H" if vr == "US" else "<I", value)
    else:
        data = str(value).encode("ascii")
    if len(data) % 2:
        data += b"\0" if vr in ("UI", "OB") else b" "
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode()
    if vr in ("OB", "OW"):
        return head + struct.pack("<HI", 0, len(data)) + data
    return head + struct.pack("<H", len(data)) + data


def _write_csv(path: Path, columns: list[str], rows: list[list[str]]) -> None:
    """CRLF records, minimal quoting: the fields ending in a newline come out quoted, as in TCIA's files."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(columns)
        writer.writerows(rows)


if __name__ == "__main__":
    raise SystemExit(main())
