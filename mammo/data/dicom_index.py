"""The DICOM tree of a CBIS-DDSM download, indexed by header, and the worker pool that reads it.

CBIS-DDSM's CSVs name files by UID paths that match no NBIA download layout exactly, so the tree is
indexed by what the headers say (study, series and SOP UIDs, size), whatever the folder names.
The pool (spawned processes) and the ordered map with a progress bar also serve patch building.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from mammo.core.errors import DataError, RecordError
from mammo.data.dicom import read_header

INDEX_COLUMNS = [
    "path", "patient_id", "study_uid", "series_uid", "sop_uid", "series_description", "rows", "columns",
    "bits_stored", "photometric", "error", "message",
]  # fmt: skip
INDEX_HEADER = {
    "patient_id": "PatientID", "study_uid": "StudyInstanceUID", "series_uid": "SeriesInstanceUID",
    "sop_uid": "SOPInstanceUID", "series_description": "SeriesDescription", "rows": "Rows", "columns": "Columns",
    "bits_stored": "BitsStored", "photometric": "PhotometricInterpretation",
}  # fmt: skip


def _find_dicom_files(root: Path) -> list[str]:
    """Every *.dcm / *.dicom / suffix-less file under root (hidden ones skipped), sorted."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in ("", ".dcm", ".dicom"):
                found.append(os.path.join(folder, name))
    return found


def _index_one(path: str) -> dict[str, Any]:
    record: dict[str, Any] = {"path": path, "error": "", "message": ""}
    try:
        header = read_header(path)
    except RecordError as exc:
        return record | {"error": "unreadable_dicom", "message": str(exc)}
    record |= {column: header[keyword] for column, keyword in INDEX_HEADER.items()}
    if not header["SeriesInstanceUID"]:
        record |= {"error": "unreadable_dicom", "message": f"{path}: no SeriesInstanceUID in the header."}
    elif not header["Rows"]:  # e.g. a DICOMDIR or a report: DICOM, but no image to match
        record |= {"error": "not_an_image", "message": f"{path}: DICOM without an image (no Rows)."}
    return record


def make_pool(workers: int, *, threads: bool = False) -> Executor | None:
    """Processes by default: header parsing, decoding and resizing small images hold the GIL. Spawned,
    not forked, so it is safe when TensorFlow or MLflow threads already run in this process.

    `threads=True` is for work that spends its time outside the GIL (roi mode: reading ~30 MB files and
    numpy passes over full-size masks). Threads start at once, while each spawned process first imports
    the package again (and the CLI's `__main__`, MLflow included): 2–7 s a worker on a 2-core machine,
    more than a 2 GB roi ingest takes in one process.
    """
    if workers <= 1:
        return None
    if threads:
        return ThreadPoolExecutor(workers, thread_name_prefix="mammo-ingest")
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def ordered_map(
    function: Callable[[Any], Any], items: Sequence[Any], *, pool: Executor | None, desc: str, progress: bool
) -> Iterator[Any]:
    """`map` in input order, in-process or on `pool`, with a tqdm bar; closing it cancels pending work."""
    chunksize = max(1, min(64, len(items) // 32))
    results = map(function, items) if pool is None else pool.map(function, items, chunksize=chunksize)
    with tqdm(total=len(items), desc=desc, disable=not progress) as bar:
        try:
            for result in results:
                bar.update()
                yield result
        finally:
            getattr(results, "close", lambda: None)()  # Executor.map's generator cancels what is still queued


def index_tree(root: str | Path, *, pool: Executor | None, progress: bool) -> pd.DataFrame:
    folder = Path(root)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder. Pass --data-dir: the CBIS-DDSM download holding the case folders.")
    files = _find_dicom_files(folder)
    with closing(ordered_map(_index_one, files, pool=pool, desc="index DICOM", progress=progress)) as rows:
        index = pd.DataFrame(list(rows), columns=INDEX_COLUMNS)
    return index.astype({"rows": "Int64", "columns": "Int64", "bits_stored": "Int64"})


def index_dicom_tree(root: str | Path, *, workers: int = 1, progress: bool = False) -> pd.DataFrame:
    """One row per DICOM file anywhere under `root`: header UIDs, size and path (INDEX_COLUMNS).

    Headers only (stop_before_pixels, ~1.5 ms a file, so the ~10k files of a full download take
    seconds); `workers` > 1 spreads them over processes. An unreadable file gets
    `error="unreadable_dicom"` and a message instead of stopping the scan.
    """
    pool = make_pool(workers)
    try:
        return index_tree(root, pool=pool, progress=progress)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
