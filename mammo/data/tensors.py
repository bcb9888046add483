"""The published project's numpy layout (`--source tensors`).

Four files: train_tensor.npy, train_labels.npy, public_test_tensor.npy, public_test_labels.npy.
Raw labels: 0 baseline (healthy), 1 mass benign, 2 mass malignant, 3 calc benign, 4 calc
malignant. Odd indices hold the abnormality patches; the even ones are healthy baseline patches
and are dropped. Loaded with allow_pickle=False: a .npy from elsewhere must never run code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mammo.core.errors import DataError, RecordError
from mammo.core.labels import CALCIFICATION, MASS
from mammo.core.pixels import PIXEL_MAX
from mammo.data.dicom import resize_patch

FILES = {
    "train": ("train_tensor.npy", "train_labels.npy"),
    "test": ("public_test_tensor.npy", "public_test_labels.npy"),
}
RAW_LABELS = {  # raw label → (label, abnormality_type, pathology)
    1: (MASS, "mass", "BENIGN"),
    2: (MASS, "mass", "MALIGNANT"),
    3: (CALCIFICATION, "calcification", "BENIGN"),
    4: (CALCIFICATION, "calcification", "MALIGNANT"),
}


def _load_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(
            f"{path} not found: --source tensors needs {sorted(f for pair in FILES.values() for f in pair)} in --data-dir."
        )
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, EOFError, OSError) as error:  # pickled, empty, truncated or not a .npy at all
        raise DataError(
            f"{path} is not a plain numpy array ({error}); re-save it with np.save(..., allow_pickle=False)."
        ) from error


def dataset_scale(tensors: list[np.ndarray]) -> float:
    """One factor for the whole dataset: PIXEL_MAX when every float tensor lies in [0, 1], else 1.

    Published tensors hold 16-bit pixels, sometimes as float already divided by 65535. Deciding per
    patch would blow a dark patch of raw values (all ≤ 1) up to full brightness; the dataset's
    maximum tells the two encodings apart. Read chunk by chunk (the tensors are memory-mapped).
    """
    floats = [tensor for tensor in tensors if np.issubdtype(tensor.dtype, np.floating) and tensor.size]
    if not floats:
        return 1.0
    top = max(
        float(np.nanmax(tensor[start : start + 256])) for tensor in floats for start in range(0, len(tensor), 256)
    )
    return float(PIXEL_MAX) if top <= 1.0 else 1.0


def _to_uint16(patch: np.ndarray, scale: float) -> np.ndarray:
    patch = np.asarray(patch).squeeze()
    if patch.dtype == np.uint16:
        return patch
    return np.clip(np.rint(patch * scale), 0, PIXEL_MAX).astype(np.uint16)


def read_tensors(
    data_dir: str | Path, *, image_size: int = 150, on_error: str = "raise"
) -> tuple[np.ndarray, pd.DataFrame, list[dict[str, str]]]:
    """Read the four files into (patches, manifest rows, skipped records)."""
    root = Path(data_dir)
    patches: list[np.ndarray] = []
    rows: list[dict[str, object]] = []
    skipped: list[dict[str, str]] = []
    arrays = {
        split: (_load_array(root / tensor), _load_array(root / labels)) for split, (tensor, labels) in FILES.items()
    }
    scale = dataset_scale([tensor for tensor, _ in arrays.values()])
    for split, (tensor_name, label_name) in FILES.items():
        tensor, raw_labels = arrays[split]
        if len(tensor) != len(raw_labels):
            raise DataError(
                f"{root / tensor_name} has {len(tensor)} patches but {label_name} has {len(raw_labels)} labels."
            )
        for position in range(1, len(tensor), 2):  # odd indices: abnormality patches
            raw = int(np.asarray(raw_labels[position]).squeeze())
            try:
                if raw not in RAW_LABELS:
                    raise RecordError(
                        f"{root / label_name} index {position}: unknown label {raw} (expected 1–4 at odd indices); "
                        "fix the label or use --on-error skip.",
                        reason="unknown_label",
                    )
                patch = _to_uint16(tensor[position], scale)
                if patch.ndim != 2:
                    raise RecordError(
                        f"{root / tensor_name} index {position}: expected a 2-D patch, got shape {patch.shape}.",
                        reason="wrong_image_kind",
                    )
            except RecordError as error:
                if on_error == "raise":
                    raise
                skipped.append(
                    {
                        "file": str(root / tensor_name),
                        "row": str(position),
                        "reason": error.reason,
                        "message": str(error),
                    }
                )
                continue
            label, kind, pathology = RAW_LABELS[raw]
            patches.append(patch if patch.shape == (image_size, image_size) else resize_patch(patch, image_size))
            rows.append({
                "patient_id": f"{split}-{position:05d}",  # the tensors carry no patient: each patch is its own group
                "case_id": f"{split}-{position:05d}",
                "side": "", "view": "", "abnormality_id": 1,
                "label": label, "abnormality_type": kind, "pathology": pathology,
                "breast_density": None, "subtlety": None,  # not in the tensors: empty in the manifest
                "split": split, "source_file": f"{tensor_name}[{position}]",
            })  # fmt: skip
    stacked = np.stack(patches) if patches else np.zeros((0, image_size, image_size), np.uint16)
    return stacked, pd.DataFrame(rows), skipped
