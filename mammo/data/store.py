"""The prepared dataset: the one format training reads.

A folder with `patches.npy` (uint16, N×S×S, memory-mappable), `manifest.csv` (one row per
patch) and `dataset.json` (provenance, counts, digest, skip report). Written once by
`prepare`; training only memory-maps it (nanoGPT's prepare-once idea).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammo import __version__
from mammo.errors import DataError

PATCHES_FILE = "patches.npy"
MANIFEST_FILE = "manifest.csv"
INFO_FILE = "dataset.json"
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
LABEL_NAMES = {0: "mass", 1: "calcification"}
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
) -> PreparedDataset:
    """Write the three files; `options` are kept so a second identical prepare is a no-op."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
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
    np.save(out / PATCHES_FILE, patches, allow_pickle=False)
    (out / SKIPPED_FILE).unlink(missing_ok=True)
    if skipped:
        pd.DataFrame(skipped).to_csv(out / SKIPPED_FILE, index=False)
    manifest.to_csv(out / MANIFEST_FILE, index=False)
    info = {
        "source": source,
        "count": len(patches),
        "counts": count_by_split_and_label(manifest),
        "image_size": int(patches.shape[1]) if len(patches) else int(options.get("image_size", 0)),
        "digest": compute_digest(patches, manifest),
        "skipped": len(skipped),
        "skipped_reasons": dict(Counter(s["reason"] for s in skipped)),
        "tool_version": __version__,
        "options": options,
    }
    (out / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True))
    return load_prepared(out)


def load_prepared(path: str | Path) -> PreparedDataset:
    """Open a prepared dataset; pixels are memory-mapped, never copied whole."""
    root = Path(path)
    for name in (PATCHES_FILE, MANIFEST_FILE, INFO_FILE):
        if not (root / name).is_file():
            raise DataError(
                f"{root / name} not found: {root} is not a prepared dataset. "
                f"Run `python -m entrypoints.prepare --out {root}` first."
            )
    patches = np.load(root / PATCHES_FILE, mmap_mode="r", allow_pickle=False)
    manifest = pd.read_csv(root / MANIFEST_FILE, dtype={"patient_id": str, "case_id": str})
    info = json.loads((root / INFO_FILE).read_text())
    if len(manifest) != len(patches):
        raise DataError(f"{root}: manifest.csv has {len(manifest)} rows, patches.npy {len(patches)}; prepare again.")
    return PreparedDataset(path=root, patches=patches, manifest=manifest, info=info)


def is_up_to_date(out_dir: str | Path, options: dict[str, Any]) -> bool:
    """True when `out_dir` already holds a dataset prepared with exactly these options."""
    root = Path(out_dir)
    try:
        info = json.loads((root / INFO_FILE).read_text())
    except (OSError, ValueError):
        return False
    if info.get("options") != json.loads(json.dumps(options)):
        return False
    return all((root / name).is_file() for name in (PATCHES_FILE, MANIFEST_FILE))
