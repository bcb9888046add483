"""CBIS-DDSM: the four case-description CSVs, matching their rows to the indexed DICOM tree, and ingest.

The CSVs name files as `<case>/<StudyInstanceUID>/<SeriesInstanceUID>/00000N.dcm`, but a TCIA
download is laid out by the NBIA retriever under other folder names, and which of 000000/000001
is the crop and which the ROI mask is not consistent. So the tree is indexed once by header UIDs
(any folder names work), each CSV row is matched by its series UIDs, and crop and mask are told
apart by content (`masks.is_roi_mask`). Bad rows follow one policy (pydicom's RAISE/IGNORE idea):
`on_error="raise"` stops at the first with a message naming CSV row, file and fix; `"skip"` records
every one with its reason in `IngestResult.skipped`.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammo.core.errors import ConfigError, DataError, RecordError
from mammo.core.labels import LABELS
from mammo.data.dicom import StoredImage, patch_from_dicom, read_stored, resize_patch
from mammo.data.dicom_index import index_tree, make_pool, ordered_map
from mammo.data.masks import binary_mask_extent, crop_region
from mammo.data.store import MANIFEST_COLUMNS

# The four files as TCIA names them, in the order rows are read; the split comes from the name.
CSV_FILES = (
    "mass_case_description_train_set.csv",
    "mass_case_description_test_set.csv",
    "calc_case_description_train_set.csv",
    "calc_case_description_test_set.csv",
)
# Lower-cased CSV header → normalised column; mass and calc files spell some headers differently.
COLUMN_NAMES = {
    header: header.replace(" ", "_")
    for header in ("patient_id", "breast_density", "breast density", "abnormality id", "abnormality type", "mass shape",
                   "mass margins", "calc type", "calc distribution", "assessment", "pathology", "subtlety")
} | {"left or right breast": "side", "image view": "view", "image file path": "image_path",
     "cropped image file path": "crop_path", "roi mask file path": "roi_path"}  # fmt: skip
REQUIRED = ("patient_id", "breast_density", "side", "view", "abnormality_id", "abnormality_type", "pathology",
            "image_path", "crop_path", "roi_path")  # fmt: skip
PATH_KINDS = ("image", "crop", "roi")
PATHOLOGIES = ("MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK")
CASE_COLUMNS = [
    "patient_id", "side", "view", "abnormality_id", "abnormality_type", "label", "pathology", "split", "case_id",
    "breast_density", "assessment", "subtlety", "mass_shape", "mass_margins", "calc_type", "calc_distribution",
    "image_path", "crop_path", "roi_path", "image_study_uid", "image_series_uid", "crop_study_uid", "crop_series_uid",
    "roi_study_uid", "roi_series_uid", "csv_file", "csv_row",
]  # fmt: skip
ROW_COLUMNS = [column for column in MANIFEST_COLUMNS if column != "index"]  # write_prepared numbers `index`
# Density and subtlety are nullable: a CSV cell may be empty, and the manifest keeps it empty, not 0.
MANIFEST_TYPES = {"abnormality_id": "int64", "label": "int64", "breast_density": "Int64", "subtlety": "Int64"}
SKIP_HINT = "or use --on-error skip to skip and count such rows"
FIXES = {
    "missing_file": f"Download (or re-download) that series from TCIA into the data folder, {SKIP_HINT}.",
    "unreadable_dicom": f"The file is truncated or not DICOM: re-download the series from TCIA, {SKIP_HINT}.",
    "wrong_image_kind": f"The series holds the wrong kind of image: re-download the series from TCIA, {SKIP_HINT}.",
    "unsafe_path": f"CSV paths must be relative and stay inside the data folder: use the original TCIA CSV, {SKIP_HINT}.",
    "unknown_label": f"Use the original TCIA CSV, {SKIP_HINT}.",
}


# ---------------------------------------------------------------- case-description CSVs


def _parts(path: str) -> list[str]:
    return [part for part in path.replace("\\", "/").split("/") if part not in ("", ".")]


def _split_path(path: str) -> tuple[str, str | None, str | None]:
    """(case folder, study UID, series UID) of a `<case>/<study>/<series>/<file>` CSV path."""
    parts = _parts(path)
    if len(parts) >= 4:
        return parts[0], parts[-3], parts[-2]
    return (parts[0] if parts else ""), None, None


def _read_one_csv(path: Path) -> pd.DataFrame:
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")  # real parser: quoted newlines
    raw.columns = [COLUMN_NAMES.get(str(c).strip().lower(), str(c).strip()) for c in raw.columns]
    missing = [" / ".join(h for h, c in COLUMN_NAMES.items() if c == col) for col in REQUIRED if col not in raw.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}. This is not a CBIS-DDSM case-description file; "
            "download the original from the TCIA CBIS-DDSM page."
        )
    table = raw.apply(lambda column: column.str.strip())
    table = table.replace("", np.nan)
    for column in ("abnormality_id", "breast_density", "assessment", "subtlety"):
        if column in table:
            table[column] = _whole_numbers(table[column])
    bad = table.index[table["abnormality_id"].isna()]
    if len(bad):
        raise DataError(f"{path} row {bad[0] + 1}: 'abnormality id' is not a whole number; fix or re-download the CSV.")
    table["side"] = table["side"].str.upper()
    table["view"] = table["view"].str.upper()
    table["abnormality_type"] = table["abnormality_type"].str.lower()
    table["pathology"] = table["pathology"].str.upper()
    table["label"] = table["abnormality_type"].map(LABELS).astype("Int64")
    table["split"] = "train" if "_train_" in path.name else "test"
    table["csv_file"] = path.name
    table["csv_row"] = np.arange(1, len(table) + 1)
    for kind in PATH_KINDS:
        parsed = table[f"{kind}_path"].fillna("").map(_split_path)
        table[f"{kind}_study_uid"] = parsed.str[1]
        table[f"{kind}_series_uid"] = parsed.str[2]
        if kind == "crop":
            table["case_id"] = parsed.str[0]
    return table.reindex(columns=CASE_COLUMNS)


def _whole_numbers(column: pd.Series) -> pd.Series:
    """Numbers as nullable integers; text, fractions, infinities and numbers past int64 become missing (NA)."""
    values = pd.to_numeric(column, errors="coerce")
    whole = np.isfinite(values) & (values == np.round(values)) & (values.abs() < 2.0**63)
    return values.where(whole).astype("Int64")


def read_case_descriptions(csv_dir: str | Path) -> pd.DataFrame:
    """The four case-description CSVs as one normalised table (one row per abnormality).

    Parsed with pandas' CSV parser because each record carries a quoted path that ends in an
    embedded newline; every cell is stripped. `csv_row` is the 1-based data row in `csv_file`,
    which is what error messages quote (line numbers would be off by the embedded newlines).
    """
    folder = Path(csv_dir)
    tables = []
    for name in CSV_FILES:
        path = folder / name
        if not path.is_file():
            raise DataError(
                f"{path} not found. Put the four CBIS-DDSM case-description CSVs ({', '.join(CSV_FILES)}) "
                "from the TCIA CBIS-DDSM page in one folder and pass it as --csv-dir."
            )
        tables.append(_read_one_csv(path))
    return pd.concat(tables, ignore_index=True)


# ---------------------------------------------------------------- patches (may run on worker processes)

SeriesFile = tuple[str, int, int]  # (absolute path, rows, columns)


@dataclass(frozen=True)
class PatchTask:
    """Everything one worker needs for one CSV row."""

    mode: str  # "crop" | "roi"
    size: int
    margin: float
    candidates: tuple[SeriesFile, ...]  # files of the crop/ROI-mask series
    full_candidates: tuple[SeriesFile, ...]  # roi mode: files of the full mammogram's series, largest first
    unreadable: tuple[str, ...]  # unreadable files in this row's case folders


@dataclass(frozen=True)
class PatchOutcome:
    patch: np.ndarray | None  # (S, S) uint16, or None with a reason
    file: str = ""  # the file used or at fault (absolute)
    reason: str = ""
    message: str = ""
    missing: str = ""  # for reason missing_file: which CSV path ("crop", "image" or "roi")


@lru_cache(maxsize=2)  # abnormalities of one mammogram are adjacent rows: open it once
def _read_full(path: str) -> StoredImage:
    return read_stored(path, lazy=True)  # memory-mapped where plain: only the cut region is read


def _not_found(task: PatchTask, kind: str, message: str) -> PatchOutcome:
    """An unreadable file in the row's case folder explains a missing series better than "missing"."""
    if task.unreadable:
        return PatchOutcome(None, task.unreadable[0], "unreadable_dicom", "unreadable DICOM in the case folder")
    return PatchOutcome(None, reason="missing_file", message=message, missing=kind)


def _crop_patch(task: PatchTask) -> PatchOutcome:
    errors: list[tuple[str, RecordError]] = []
    for path, _, _ in sorted(task.candidates, key=lambda c: c[1] * c[2]):  # the small crop before the full-size mask
        try:
            return PatchOutcome(patch_from_dicom(path, size=task.size)[0], path)
        except RecordError as exc:
            if exc.reason != "roi_mask":
                errors.append((path, exc))
    if errors:
        return PatchOutcome(None, errors[0][0], errors[0][1].reason, str(errors[0][1]))
    if task.unreadable or not task.candidates:
        return _not_found(task, "crop", "no DICOM of the crop/ROI series")
    found = ", ".join(path for path, _, _ in task.candidates)
    return PatchOutcome(None, task.candidates[0][0], "wrong_image_kind", f"only ROI mask(s), no cropped image: {found}")


def _roi_patch(task: PatchTask) -> PatchOutcome:
    if not task.full_candidates:
        return _not_found(task, "image", "no DICOM of the full mammogram's series")
    current = task.full_candidates[0][0]
    try:
        full = _read_full(current)
        for current, rows, columns in task.candidates:  # header sizes first: decode only same-size candidates
            if (rows, columns) != full.shape:
                continue
            # The mask is judged on its stored values where the uint16 mapping cannot change the verdict or
            # the box, and only the cut region of the mammogram is mapped: the same patch, a fraction of the work.
            mask = read_stored(current).order_kept_values()
            is_mask, extent = binary_mask_extent(mask)
            if is_mask:
                region = crop_region(full.shape, mask, margin=task.margin, extent=extent)
                return PatchOutcome(resize_patch(full.to_uint16(region), task.size), current)
    except RecordError as exc:
        return PatchOutcome(None, current, exc.reason, str(exc))
    if task.unreadable or not task.candidates:
        return _not_found(task, "roi", "no DICOM of the ROI mask's series")
    sizes = ", ".join(f"{path} ({rows}×{columns})" for path, rows, columns in task.candidates)
    message = f"no binary ROI mask of the full mammogram's size {full.shape[0]}×{full.shape[1]} among {sizes}"
    return PatchOutcome(None, task.candidates[0][0], "wrong_image_kind", message)


def build_patch(task: PatchTask) -> PatchOutcome:
    """One CSV row → one patch, or the reason it cannot be made (never raises RecordError)."""
    return _crop_patch(task) if task.mode == "crop" else _roi_patch(task)


# ---------------------------------------------------------------- ingest


@dataclass
class IngestResult:
    """Patches in CSV order, their manifest rows, and every skipped row with its reason."""

    patches: np.ndarray  # (N, S, S) uint16
    manifest: pd.DataFrame  # ROW_COLUMNS (the manifest before write_prepared numbers it)
    skipped: list[dict[str, Any]]  # {"csv_file", "csv_row", "file", "reason", "message"}
    index: pd.DataFrame | None = None  # the DICOM index the rows were matched against

    @property
    def skip_counts(self) -> dict[str, int]:
        return dict(Counter(entry["reason"] for entry in self.skipped))


class _Tree:
    """Lookups over the DICOM index: by series UID, by literal CSV path, unreadable files by folder."""

    def __init__(self, index: pd.DataFrame, root: Path) -> None:
        self.root = str(root)
        self.by_series: dict[str, list[SeriesFile]] = {}
        self.by_path: dict[str, SeriesFile] = {}
        self.unreadable: dict[str, list[str]] = {}
        for rec in index.itertuples(index=False):
            if rec.error == "unreadable_dicom":
                for folder in Path(os.path.relpath(rec.path, self.root)).parts[:-1]:
                    self.unreadable.setdefault(folder, []).append(rec.path)
            if rec.error:
                continue
            candidate = (rec.path, int(rec.rows), int(rec.columns))
            self.by_series.setdefault(rec.series_uid, []).append(candidate)
            self.by_path[os.path.normpath(rec.path)] = candidate

    def files(self, row: Any, kinds: Sequence[str]) -> list[SeriesFile]:
        """Files of the rows' series (by header UID) plus any file at the CSV's literal path."""
        found: dict[str, SeriesFile] = {}
        for kind in kinds:
            path = getattr(row, f"{kind}_path")
            literal = self.by_path.get(os.path.normpath(os.path.join(self.root, path))) if _is_text(path) else None
            for candidate in [*self.by_series.get(getattr(row, f"{kind}_series_uid"), []), *filter(None, [literal])]:
                found[candidate[0]] = candidate
        return list(found.values())

    def unreadable_near(self, row: Any, kinds: Sequence[str]) -> tuple[str, ...]:
        if not self.unreadable:
            return ()
        paths = [getattr(row, f"{kind}_path") for kind in kinds]
        folders = sorted({_split_path(path)[0] for path in paths if _is_text(path)})
        return tuple(dict.fromkeys(path for folder in folders for path in self.unreadable.get(folder, [])))

    def relative(self, path: str) -> str:
        return Path(os.path.relpath(path, self.root)).as_posix() if path else ""


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _is_unsafe(path: Any) -> bool:
    posix = path.replace("\\", "/") if _is_text(path) else ""
    return posix.startswith("/") or bool(re.match(r"[A-Za-z]:", posix)) or ".." in posix.split("/")


def _plan(row: Any, tree: _Tree, *, mode: str, size: int, margin: float) -> PatchTask | tuple[str, str, str]:
    """A worker task for the row, or (reason, detail, CSV path) when the row is bad before any pixel is read."""
    if pd.isna(row.label) or row.pathology not in PATHOLOGIES:
        detail = f"abnormality type {row.abnormality_type!r} / pathology {row.pathology!r} is not one of {sorted(LABELS)} / {list(PATHOLOGIES)}"
        return "unknown_label", detail, ""
    for kind in PATH_KINDS:
        if _is_unsafe(path := getattr(row, f"{kind}_path")):
            return "unsafe_path", f"{kind} file path {path!r} is absolute or leaves the data folder", path
    candidates = tuple(tree.files(row, ("crop", "roi")))
    if mode == "crop":
        return PatchTask(mode, size, margin, candidates, (), tree.unreadable_near(row, ("crop", "roi")))
    full = tuple(sorted(tree.files(row, ("image",)), key=lambda c: -c[1] * c[2]))  # the mammogram is the largest
    return PatchTask(mode, size, margin, candidates, full, tree.unreadable_near(row, PATH_KINDS))


def _problem(row: Any, outcome: PatchOutcome, tree: _Tree) -> tuple[str, str, str]:
    """(reason, detail, file) of a failed outcome; a missing series names its CSV path and UID."""
    if outcome.reason != "missing_file":
        return outcome.reason, outcome.message, tree.relative(outcome.file)
    kinds = ("crop", "roi") if outcome.missing == "crop" else (outcome.missing,)
    by_series: dict[str, list[str]] = {}
    for kind in kinds:
        by_series.setdefault(str(getattr(row, f"{kind}_series_uid")), []).append(str(getattr(row, f"{kind}_path")))
    wanted = "; ".join(f"SeriesInstanceUID {uid} (CSV path {', '.join(paths)})" for uid, paths in by_series.items())
    return "missing_file", f"{outcome.message} under {tree.root}: {wanted}", getattr(row, f"{kinds[0]}_path")


def _collect(
    rows: list[Any], plans: list[PatchTask | tuple[str, str, str]], outcomes: Iterator[PatchOutcome], tree: _Tree, *,
    on_error: str,
) -> tuple[list[np.ndarray], list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """Walk the rows in CSV order: keep each patch with its manifest row, or raise/record the problem."""
    patches, used, skipped = [], [], []
    for row, plan in zip(rows, plans, strict=True):
        outcome = next(outcomes) if isinstance(plan, PatchTask) else None
        if outcome is not None and outcome.patch is not None:
            patches.append(outcome.patch)
            used.append({column: getattr(row, column, None) for column in ROW_COLUMNS})
            used[-1]["source_file"] = tree.relative(outcome.file)
            continue
        reason, detail, file = _problem(row, outcome, tree) if outcome is not None else plan
        where = f"{row.csv_file} row {row.csv_row} ({row.case_id}, abnormality {row.abnormality_id})"
        message = f"{where}: {detail}. {FIXES[reason]}"
        if on_error == "raise":
            raise RecordError(message, reason=reason)
        skipped.append(dict(csv_file=row.csv_file, csv_row=int(row.csv_row), file=file, reason=reason, message=message))
    return patches, used, skipped


def _validate(*, image_size: int, patch: str, margin: float, on_error: str, workers: int) -> None:
    if patch not in ("crop", "roi"):
        raise ConfigError(
            f"patch must be 'crop' (resize the cropped image) or 'roi' (cut around the mask), got {patch!r}"
        )
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if not isinstance(image_size, int) or image_size < 8:
        raise ConfigError(f"image_size must be an integer >= 8 pixels, got {image_size!r}")
    if margin < 0 or workers < 1:
        raise ConfigError(f"margin must be >= 0 and workers >= 1, got {margin=!r}, {workers=!r}")


def _default_csv_dir(data_dir: Path) -> Path:
    first = CSV_FILES[0]
    return next((folder for folder in (data_dir, data_dir / "csv") if (folder / first).is_file()), data_dir)


def ingest_cbis(
    *,
    data_dir: str | Path,
    csv_dir: str | Path | None = None,
    image_size: int = 150,
    patch: str = "crop",
    margin: float = 0.25,
    on_error: str = "raise",
    workers: int = 1,
    progress: bool = True,
) -> IngestResult:
    """Turn a CBIS-DDSM download (DICOM tree + the four CSVs) into uint16 patches and a manifest.

    `patch="crop"` resizes each row's cropped image with `dicom.patch_from_dicom` (the call
    predict/serve make too); `"roi"` cuts the full mammogram around the ROI mask's bounding box plus
    `margin` of context, then resizes. `csv_dir` defaults to `data_dir` (or `data_dir/csv`). The
    manifest's `source_file` is the crop (or, in roi mode, the mask) relative to `data_dir`, so the
    digest does not depend on where the data lives. `workers` > 1 indexes and decodes on that many
    spawned processes (crop mode) or threads (roi mode).

    Raises:
        DataError: a CSV or required column is missing, or `data_dir` is not a folder.
        RecordError: with on_error="raise", the first bad row (its reason as in `skipped`).
    """
    _validate(image_size=image_size, patch=patch, margin=margin, on_error=on_error, workers=workers)
    root = Path(data_dir)
    cases = read_case_descriptions(csv_dir if csv_dir is not None else _default_csv_dir(root))
    # One pool for indexing and decoding: start-up paid once. roi mode is file reads and numpy passes over
    # full-size images, outside the GIL: threads, which start at once (make_pool says why that matters).
    pool = make_pool(workers, threads=patch == "roi")
    try:
        index = index_tree(root, pool=pool, progress=progress)
        tree = _Tree(index, root)
        rows = list(cases.itertuples(index=False))
        plans = [_plan(row, tree, mode=patch, size=image_size, margin=margin) for row in rows]
        tasks = [plan for plan in plans if isinstance(plan, PatchTask)]
        with closing(ordered_map(build_patch, tasks, pool=pool, desc="CBIS-DDSM", progress=progress)) as outcomes:
            patches, used, skipped = _collect(rows, plans, outcomes, tree, on_error=on_error)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        _read_full.cache_clear()  # do not keep two full mammograms alive after ingest
    manifest = pd.DataFrame(used, columns=ROW_COLUMNS).astype(MANIFEST_TYPES)
    stacked = np.stack(patches) if patches else np.zeros((0, image_size, image_size), np.uint16)
    return IngestResult(patches=stacked, manifest=manifest, skipped=skipped, index=index)
