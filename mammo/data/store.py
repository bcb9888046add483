"""The prepared dataset: the one format training reads.

A folder with `patches.npy` (uint16, N×S×S, memory-mappable), `manifest.csv` (one row per
patch) and `dataset.json` (provenance, counts, digest, skip report). Written once by
`prepare`; training only memory-maps it (nanoGPT's prepare-once idea).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammo import __version__
from mammo.core.errors import DataError
from mammo.core.labels import CLASS_NAMES

PATCHES_FILE = "patches.npy"
MANIFEST_FILE = "manifest.csv"
INFO_FILE = "dataset.json"
STAGING_PREFIX = ".staging-"  # <parent>/.staging-<name>-XXXX: a prepare writing <name>
SKIPPED_FILE = "skipped.csv"  # one row per skipped record: file, row, reason, message

MANIFEST_COLUMNS = [
    "index",
    "patient_id",
    "case_id",
    "side",
    "view",
    "abnormality_id",
    "label",
    "abnormality_type",
    "pathology",
    "breast_density",  # BI-RADS 1–4 from the CBIS-DDSM CSVs; empty where the source has none (tensors)
    "subtlety",  # 1–5, the radiologist's rating of how hard the lesion is to see; empty where unknown
    "split",
    "source_file",
]
LABEL_NAMES = dict(enumerate(CLASS_NAMES))
SPLITS = ("train", "test")


@dataclass(frozen=True)
class PreparedDataset:
    """A prepared dataset opened for reading; `patches` is a read-only memory map."""

    path: Path
    patches: np.ndarray  # (N, S, S) uint16
    manifest: pd.DataFrame
    info: dict[str, Any]

    @property
    def labels(self) -> np.ndarray:
        return self.manifest["label"].to_numpy(dtype=np.int64)

    @property
    def digest(self) -> str:
        return str(self.info["digest"])

    @property
    def source(self) -> str:
        return str(self.info["source"])

    @property
    def image_size(self) -> int:
        return int(self.info["image_size"])

    @property
    def patients_known(self) -> bool:
        """False when the source carries no patient ids (tensors: every patch is its own "patient")."""
        return bool(self.info.get("patients_known", True))

    @property
    def patients_in_both_splits(self) -> int | None:
        """Patients with patches in both official splits (the leakage the data itself carries); None if unknown."""
        if not self.patients_known:
            return None
        recorded = self.info.get("patients_in_both_splits")
        return int(recorded) if recorded is not None else patients_in_both_splits(self.manifest)

    def split_indices(self, split: str) -> np.ndarray:
        """Row indices of the official `train` or `test` split."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return np.flatnonzero(self.manifest["split"].to_numpy() == split)


def compute_digest(patches: np.ndarray, manifest: pd.DataFrame) -> str:
    """Content digest of pixels + manifest: equal data gives an equal digest."""
    sha = hashlib.sha256()
    sha.update(str(patches.shape).encode())
    sha.update(np.ascontiguousarray(patches).tobytes())
    sha.update(manifest[MANIFEST_COLUMNS].to_csv(index=False).encode())
    return sha.hexdigest()[:16]


def patients_in_both_splits(rows: pd.DataFrame) -> int:
    """How many patient_ids have rows in both the official train and test splits.

    The official CBIS-DDSM split is by abnormality, not patient: a patient's mass can be in train and
    their calcification in test. Counted, so that the test figures can be read with it in mind.
    """
    train = set(rows.loc[rows["split"] == "train", "patient_id"].dropna())
    test = set(rows.loc[rows["split"] == "test", "patient_id"].dropna())
    return len(train & test)


def count_by_split_and_label(manifest: pd.DataFrame) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        rows = manifest[manifest["split"] == split]
        counts[split] = {name: int((rows["label"] == label).sum()) for label, name in LABEL_NAMES.items()}
    return counts


def write_prepared(
    out_dir: str | Path,
    *,
    patches: np.ndarray,
    manifest: pd.DataFrame,
    source: str,
    options: dict[str, Any],
    skipped: list[dict[str, str]] | None = None,
    patients_known: bool = True,
) -> PreparedDataset:
    """Write the three files into a staging folder beside `out_dir`, then publish them atomically.

    `options` are kept so a second identical prepare is a no-op. `patients_known` is False for a
    source without patient ids, whose patient split is then really a split per image. Readers never see a mix: the old
    dataset.json goes first, the files are renamed into place (a process that has the old
    patches.npy memory-mapped keeps its inode, unharmed), and the new dataset.json, which records
    every file's size and SHA-256, comes last. A writer killed at any point leaves either the old
    complete dataset or a folder without dataset.json, which no reader takes for a dataset.
    """
    out = Path(out_dir)
    if patches.dtype != np.uint16 or patches.ndim != 3 or patches.shape[1] != patches.shape[2]:
        raise ValueError(f"patches must be uint16 (N, S, S), got {patches.dtype} {patches.shape}")
    if len(manifest) != len(patches):
        raise ValueError(f"manifest has {len(manifest)} rows but there are {len(patches)} patches")
    manifest = manifest.reset_index(drop=True).copy()
    manifest["index"] = np.arange(len(manifest))
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks columns {missing}")
    manifest = manifest[MANIFEST_COLUMNS]
    skipped = skipped or []
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{out.name}-", dir=out.parent))
    try:
        np.save(staging / PATCHES_FILE, patches, allow_pickle=False)
        manifest.to_csv(staging / MANIFEST_FILE, index=False)
        if skipped:
            pd.DataFrame(skipped).to_csv(staging / SKIPPED_FILE, index=False)
        info = {
            "source": source,
            "count": len(patches),
            "counts": count_by_split_and_label(manifest),
            "image_size": int(patches.shape[1]) if len(patches) else int(options.get("image_size", 0)),
            "digest": compute_digest(patches, manifest),
            "patients_known": patients_known,
            "patients_in_both_splits": patients_in_both_splits(manifest) if patients_known else None,
            "skipped": len(skipped),
            "skipped_reasons": dict(Counter(s["reason"] for s in skipped)),
            "tool_version": __version__,
            "options": options,
            "files": {name: _file_record(staging / name) for name in (PATCHES_FILE, MANIFEST_FILE)},
        }
        (staging / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True))
        _publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return open_prepared(out)


def _file_record(path: Path) -> dict[str, Any]:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            sha.update(block)
    return {"bytes": path.stat().st_size, "sha256": sha.hexdigest()}


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _publish(staging: Path, out: Path) -> None:
    """Rename the staged files into `out`, dataset.json removed first and written last (the commit)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in (PATCHES_FILE, MANIFEST_FILE, INFO_FILE):
        _fsync(staging / name)
    (out / INFO_FILE).unlink(missing_ok=True)
    _fsync(out)
    for name in (PATCHES_FILE, MANIFEST_FILE, SKIPPED_FILE):
        if (staging / name).exists():
            os.replace(staging / name, out / name)
        else:
            (out / name).unlink(missing_ok=True)
    os.replace(staging / INFO_FILE, out / INFO_FILE)
    _fsync(out)


def remove_stale_staging(out: Path) -> None:
    """Staging folders of `out` left by a killed prepare (call only while holding `dataset_lock(out)`)."""
    for folder in Path(out).parent.glob(f"{STAGING_PREFIX}{Path(out).name}-*"):
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def dataset_lock(out: str | Path, *, shared: bool = False) -> Iterator[None]:
    """An advisory file lock beside the dataset folder: prepare holds it exclusive, readers shared.

    The lock file sits next to the folder (`.<name>.lock`), so it outlives the folder's contents.
    Where it cannot be created (a read-only share), readers go on without it: nobody writes there.
    """
    folder = Path(out)
    lock_path = folder.parent / f".{folder.name}.lock"
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        handle = lock_path.open("a")
    except OSError:
        if shared:
            yield
            return
        raise
    with handle:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _incomplete(root: Path, problem: str) -> DataError:
    return DataError(
        f"{root} is not a complete prepared dataset ({problem}). Run `python -m entrypoints.prepare --out {root}` "
        "(with the options it was prepared with) to prepare it again."
    )


def load_prepared(path: str | Path) -> PreparedDataset:
    """Open a prepared dataset; pixels are memory-mapped, never copied whole.

    Opened under the shared lock, so never halfway through a prepare's publish; each file's size is
    checked against dataset.json, so a folder a killed prepare left behind is refused, not misread.
    """
    with dataset_lock(path, shared=True):
        return open_prepared(path)


def open_prepared(path: str | Path) -> PreparedDataset:
    """`load_prepared` without the lock: for the holder of `dataset_lock` (prepare), which would deadlock on it."""
    root = Path(path)
    for name in (PATCHES_FILE, MANIFEST_FILE, INFO_FILE):
        if not (root / name).is_file():
            raise _incomplete(root, f"{name} is missing")
    try:
        info = json.loads((root / INFO_FILE).read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise _incomplete(root, f"{INFO_FILE} is not valid JSON: {error}") from error
    if not isinstance(info, dict) or not isinstance(info.get("files", {}), dict):
        raise _incomplete(root, f"{INFO_FILE} is not a dataset description")
    for name, record in info.get("files", {}).items():  # write_prepared records each file's size
        size = (root / name).stat().st_size if (root / name).is_file() else None
        if not isinstance(record, dict) or size != record.get("bytes"):
            raise _incomplete(root, f"{name} has {size} bytes, {INFO_FILE} says {record}")
    try:
        patches = np.load(root / PATCHES_FILE, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError, OSError) as error:
        raise _incomplete(root, f"{PATCHES_FILE} is not a numpy array: {error}") from error
    if patches.ndim != 3 or patches.dtype != np.uint16:
        raise _incomplete(root, f"{PATCHES_FILE} holds {patches.dtype} {patches.shape}, not uint16 (N, S, S)")
    try:
        manifest = pd.read_csv(root / MANIFEST_FILE, dtype={"patient_id": str, "case_id": str})
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise _incomplete(root, f"{MANIFEST_FILE} is not a readable CSV: {error}") from error
    extra = [column for column in manifest.columns if column not in MANIFEST_COLUMNS]
    manifest = manifest.reindex(columns=[*MANIFEST_COLUMNS, *extra])  # older datasets lack newer columns
    if len(manifest) != len(patches):
        raise _incomplete(root, f"manifest.csv has {len(manifest)} rows, patches.npy {len(patches)}")
    return PreparedDataset(path=root, patches=patches, manifest=manifest, info=info)


def is_up_to_date(out_dir: str | Path, options: dict[str, Any]) -> bool:
    """True when `out_dir` holds a complete dataset prepared with exactly these options.

    Complete means every file matches the size and SHA-256 that dataset.json recorded: a copy
    interrupted or a file replaced by hand is prepared again, not reported "up to date".
    """
    root = Path(out_dir)
    try:
        info = json.loads((root / INFO_FILE).read_text())
    except (OSError, ValueError):
        return False
    if info.get("options") != json.loads(json.dumps(options)) or "files" not in info:
        return False
    try:
        return all(_file_record(root / name) == record for name, record in info["files"].items())
    except OSError:
        return False
