"""Source → prepared dataset, once.

`prepare` reads a source (the synthetic default, a CBIS-DDSM download, or the published numpy
tensors) and writes the prepared dataset that training memory-maps. The options are stored in
dataset.json, so preparing the same source again with the same options is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mammo.core.errors import ConfigError, DataError
from mammo.data.store import (
    SPLITS,
    STAGING_PREFIX,
    PreparedDataset,
    dataset_lock,
    is_up_to_date,
    open_prepared,
    remove_stale_staging,
    write_prepared,
)

SOURCES = ("synthetic", "cbis-ddsm", "tensors")
PATCH_MODES = ("crop", "roi")
ERROR_POLICIES = ("raise", "skip")
DATA_HOME_VARIABLE = "MAMMO_DATA_HOME"
_CHECKOUT = Path(__file__).resolve().parents[2]  # the repository, when the package runs from a checkout
EMPTY_SPLIT_FIXES = {  # main skip reason → what to do when a whole split came out empty
    "missing_file": "Point --data-dir at the folder holding the downloaded DICOM series of both splits "
    "(the CSVs name files this tree does not hold).",
    "unreadable_dicom": "Re-download the DICOM series from TCIA: the files are truncated or not DICOM.",
    "wrong_image_kind": "Check --patch: crop mode needs the cropped-image series, roi mode the full mammograms.",
    "unknown_label": "Use the original TCIA case-description CSVs.",
}


@dataclass(frozen=True)
class PrepareResult:
    dataset: PreparedDataset
    reused: bool  # True when an identical dataset was already there (no-op)
    skipped: list[dict[str, str]]


def data_home() -> Path:
    """Where prepared datasets and generated trees live, as an absolute path: `$MAMMO_DATA_HOME`, else the
    checkout's `data/` (else `./data` when the package is installed outside a checkout).

    One place whatever the working directory: `train` started from another folder finds the dataset
    `prepare` made instead of preparing it again, and so does the registry's lineage lookup.
    """
    configured = os.environ.get(DATA_HOME_VARIABLE)
    if configured:
        return Path(configured).expanduser().resolve()
    base = _CHECKOUT if (_CHECKOUT / "MLproject").is_file() else Path.cwd()
    return (base / "data").resolve()


def default_out(options: dict[str, Any]) -> Path:
    """<data home>/prepared/<source>-<patch>-<size>px-<hash of every option>: other options, another folder.

    The readable part says what it is; the hash keeps datasets made with different options (size,
    patch mode, cases, seed, data folder, error policy) from ever sharing one default folder.
    """
    key = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:8]
    mode = f"-{options['patch']}" if "patch" in options else ""
    return data_home() / "prepared" / f"{options['source']}{mode}-{options['image_size']}px-{key}"


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"--{name.replace('_', '-')} must be one of {', '.join(choices)}; got {value!r}.")


def prepare_options(
    *, source: str, data_dir: str | Path | None, csv_dir: str | Path | None, image_size: int, patch: str,
    cases: int | None, seed: int, on_error: str,
) -> dict[str, Any]:  # fmt: skip
    """Validate the options and return the dict stored in dataset.json (the no-op key)."""
    _check_choice("source", source, SOURCES)
    _check_choice("patch", patch, PATCH_MODES)
    _check_choice("on_error", on_error, ERROR_POLICIES)
    if not 16 <= image_size <= 1024:
        raise ConfigError(f"--image-size must be between 16 and 1024 pixels, got {image_size}.")
    if source != "synthetic" and data_dir is None:
        raise ConfigError(f"--source {source} needs --data-dir (the DICOM tree or the folder of .npy files).")
    for flag, folder in (("--data-dir", data_dir), ("--csv-dir", csv_dir)):
        if folder is not None and not Path(folder).is_dir():
            raise ConfigError(f"{flag} {folder} is not a folder; pass the folder that holds the download.")
    options: dict[str, Any] = {"source": source, "image_size": image_size, "seed": seed, "on_error": on_error}
    if source == "synthetic":
        from mammo.data.synthetic import DEFAULT_CASES

        # "tree": drawn with numpy's portable code paths (synthetic.generate_portable_tree), the same bytes on every
        # AVX2+ machine; a default prepared before that (AVX-512 machines drew other bytes) gets a folder of its own.
        options |= {"cases": int(cases or DEFAULT_CASES), "patch": patch, "tree": "portable"}
    elif source == "cbis-ddsm":
        data = Path(data_dir).resolve()  # type: ignore[arg-type]
        options |= {"data_dir": str(data), "csv_dir": str(Path(csv_dir or data).resolve()), "patch": patch}
    else:
        options |= {"data_dir": str(Path(data_dir).resolve())}  # type: ignore[arg-type]
    return options


def prepare(
    *, source: str = "synthetic", data_dir: str | Path | None = None, csv_dir: str | Path | None = None,
    out: str | Path | None = None, image_size: int = 150, patch: str = "crop", cases: int | None = None,
    seed: int = 0, on_error: str = "raise", workers: int = 1, progress: bool = True,
) -> PrepareResult:  # fmt: skip
    """Prepare `source` into `out` (default: `default_out(options)`); a no-op when already done.

    The folder's lock is held throughout, so several workers preparing the same default on first
    use take turns: the first prepares, the others find it done.
    """
    options = prepare_options(
        source=source, data_dir=data_dir, csv_dir=csv_dir, image_size=image_size, patch=patch, cases=cases,
        seed=seed, on_error=on_error,
    )  # fmt: skip
    out_dir = (
        Path(out).expanduser().resolve() if out is not None else default_out(options)
    )  # absolute, as the runs log it
    with dataset_lock(out_dir):
        if is_up_to_date(out_dir, options):
            return PrepareResult(dataset=open_prepared(out_dir), reused=True, skipped=[])
        remove_stale_staging(out_dir)  # left by a prepare that was killed; we hold the lock, so none is live
        patches, manifest, skipped = _read_source(options, workers=workers, progress=progress)
        _check_splits(manifest, skipped, out_dir)
        dataset = write_prepared(
            out_dir,
            patches=patches,
            manifest=manifest,
            source=source,
            options=options,
            skipped=skipped,
            patients_known=source != "tensors",  # the tensors carry no patient: each patch is its own group
        )
    return PrepareResult(dataset=dataset, reused=False, skipped=skipped)


def _read_source(options: dict[str, Any], *, workers: int, progress: bool) -> tuple[Any, Any, list[dict[str, str]]]:
    source, image_size, on_error = options["source"], options["image_size"], options["on_error"]
    if source == "tensors":
        from mammo.data.tensors import read_tensors

        return read_tensors(options["data_dir"], image_size=image_size, on_error=on_error)
    from mammo.data.cbis import ingest_cbis

    if source == "synthetic":
        data_dir = csv_dir = _synthetic_tree(cases=options["cases"], seed=options["seed"], progress=progress)
    else:
        data_dir, csv_dir = options["data_dir"], options["csv_dir"]
    result = ingest_cbis(
        data_dir=data_dir, csv_dir=csv_dir, image_size=image_size, patch=options["patch"], on_error=on_error,
        workers=workers, progress=progress,
    )  # fmt: skip
    return result.patches, result.manifest, result.skipped


def _check_splits(manifest: Any, skipped: list[dict[str, str]], out_dir: Path) -> None:
    """Refuse a dataset that cannot train: an empty official train or test split, with the main reason."""
    counts = {split: int((manifest["split"] == split).sum()) if len(manifest) else 0 for split in SPLITS}
    empty = [split for split, count in counts.items() if count == 0]
    if not empty:
        return
    reasons = Counter(entry["reason"] for entry in skipped)
    report = out_dir.parent / f"{out_dir.name}.skipped.csv"
    if skipped:
        import pandas as pd

        report.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(skipped).to_csv(report, index=False)
    main = (
        f"; the main skip reason is {reasons.most_common(1)[0][0]} ({reasons.most_common(1)[0][1]} of "
        f"{len(skipped) + len(manifest)} records, all reasons {dict(reasons)}, listed in {report})"
        if skipped
        else ""
    )
    fix = EMPTY_SPLIT_FIXES.get(reasons.most_common(1)[0][0], "") if skipped else ""
    raise DataError(
        f"prepare made {counts['train']} train and {counts['test']} test patches: the {' and '.join(empty)} "
        f"split{'s are' if len(empty) > 1 else ' is'} empty, so nothing could train or be tested on it{main}. "
        f"{fix or 'Check --data-dir and --csv-dir.'} Nothing was written to {out_dir}."
    )


def _synthetic_tree(*, cases: int, seed: int, progress: bool) -> Path:
    """Generate the synthetic TCIA tree once per (cases, seed), under its lock, published by a rename."""
    from mammo.data.synthetic import generate_portable_tree

    tree = data_home() / "raw" / f"synthetic-{cases}-seed{seed}-portable"
    marker = tree / ".complete"
    with dataset_lock(tree):
        if not marker.is_file():
            shutil.rmtree(tree, ignore_errors=True)
            staging = tree.with_name(f"{STAGING_PREFIX}{tree.name}")
            shutil.rmtree(staging, ignore_errors=True)
            generate_portable_tree(staging, cases=cases, seed=seed, progress=progress)
            (staging / ".complete").write_text("generated by mammo.data.synthetic\n")
            os.replace(staging, tree)
    return tree


def ensure_prepared(source: str = "synthetic", out: str | Path | None = None, **options: Any) -> Path:
    """The prepared dataset's folder, preparing it first if needed (train's default data)."""
    return prepare(source=source, out=out, **options).dataset.path


def open_dataset(data: str | Path | None) -> PreparedDataset:
    """The prepared dataset at `data`, or the synthetic default (prepared on first use, then reused)."""
    from mammo.data.store import load_prepared

    return load_prepared(Path(data) if data else ensure_prepared("synthetic"))
