"""Which prepared dataset a run or a model came from, and its held-out test patches.

Runs record their data by content digest (`data_digest`) and as dataset inputs; a folder is
trusted only when its dataset.json carries the same digest, wherever it lies now.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mammo import tracking
from mammo.core.errors import ConfigError, DataError
from mammo.data.prepare import data_home
from mammo.data.store import INFO_FILE, PreparedDataset, load_prepared
from mammo.serve import serving


def _digest_at(folder: Path) -> str | None:
    try:
        return str(json.loads((folder / INFO_FILE).read_text()).get("digest"))
    except (OSError, ValueError):
        return None


def find_prepared(digest: str, *, run: Any = None, roots: tuple[Path, ...] | None = None) -> Path:
    """The prepared dataset folder whose content digest is `digest`.

    Looks at the run's dataset inputs, its `prepared_dir` param, then every `<root>/*` folder (default:
    the data home's `prepared/`, `prepare.data_home`), and trusts a folder only if its dataset.json
    carries the same digest.
    """
    roots = (data_home() / "prepared",) if roots is None else roots
    looked: list[Path] = []
    if run is not None:
        looked += tracking.run_dataset_folders(run)
        if run.data.params.get("prepared_dir"):
            looked.append(Path(run.data.params["prepared_dir"]))
    for root in roots:
        looked += sorted(path.parent for path in Path(root).glob(f"*/{INFO_FILE}"))
    for folder in looked:
        if _digest_at(folder) == digest:
            return folder
    where = (
        ", ".join(str(path) for path in looked)
        or f"nowhere (no dataset inputs, nothing in {roots[0] if roots else 'no folder'})"
    )
    raise DataError(
        f"no prepared dataset with digest {digest} found (looked in {where}). Pass --data <prepared folder>, "
        "or prepare the same source with the same options again (python -m entrypoints.prepare ...)."
    )


def describe_dataset(digest: str, run_id: str) -> str:
    """`<patches> patches at <folder>` for the prepared dataset a run used, as a listing shows it."""
    try:
        folder = find_prepared(digest, run=tracking.get_run(run_id))
        count = json.loads((folder / INFO_FILE).read_text()).get("count", "?")
    except (DataError, ConfigError, OSError, ValueError):
        return "patches ?, folder not found here"
    return f"{count} patches at {folder}"


def dataset_of_run(run: Any) -> PreparedDataset:
    """The prepared dataset a training run used (its data_digest), wherever it lies now."""
    digest = run.data.params.get("data_digest")
    if not digest:
        raise ConfigError(f"run {run.info.run_id} has no data_digest param; pass --data <prepared folder>.")
    return load_prepared(find_prepared(digest, run=run))


def dataset_for_model(model_uri: str, data: str | Path | None = None) -> PreparedDataset:
    """`data` if given, else the prepared dataset the model was trained on (its run's data_digest)."""
    if data is not None:
        return load_prepared(data)
    run_id = serving.source_run_id(model_uri)
    if not run_id:
        raise ConfigError(f"cannot tell which run logged {model_uri} (no source run); pass --data.")
    return dataset_of_run(tracking.get_run(run_id))


def held_out_patches(dataset: PreparedDataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices, patches (n, S, S) uint16, labels) of the official test split."""
    indices = dataset.split_indices("test")
    if len(indices) == 0:
        raise DataError(f"{dataset.path} has no test patches; the gate needs the official test split.")
    return indices, np.asarray(dataset.patches[indices]), dataset.labels[indices]
