"""`prepare` entry point: a source → the prepared dataset, logged as an MLflow run's input."""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from entrypoints import optional_int, optional_str
from mammo import tracking
from mammo.data.prepare import ERROR_POLICIES, PATCH_MODES, SOURCES, prepare
from mammo.data.store import SKIPPED_FILE
from mammo.errors import MammoError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="prepare", description=__doc__)
    parser.add_argument("--source", choices=SOURCES, default="synthetic")
    parser.add_argument(
        "--data-dir", type=optional_str, help="the DICOM tree (cbis-ddsm) or the folder of .npy files (tensors)"
    )
    parser.add_argument(
        "--csv-dir", type=optional_str, help="folder of the four case-description CSVs (default: --data-dir)"
    )
    parser.add_argument("--out", type=optional_str, help="output folder (default data/prepared/<source>)")
    parser.add_argument("--image-size", type=optional_int, default=150)
    parser.add_argument("--patch", choices=PATCH_MODES, default="crop")
    parser.add_argument("--cases", type=optional_int, help="synthetic only: number of case rows to generate")
    parser.add_argument("--seed", type=optional_int, default=0)
    parser.add_argument("--on-error", choices=ERROR_POLICIES, default="raise")
    parser.add_argument("--workers", type=optional_int, default=1)
    parser.add_argument(
        "--experiment", type=optional_str, default=None, help=f"MLflow experiment (default {tracking.EXPERIMENT})"
    )
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = prepare(
            source=args.source, data_dir=args.data_dir, csv_dir=args.csv_dir, out=args.out,
            image_size=args.image_size, patch=args.patch, cases=args.cases, seed=args.seed,
            on_error=args.on_error, workers=args.workers, progress=not args.no_progress,
        )  # fmt: skip
    except MammoError as error:
        print(f"prepare: error: {error}", file=sys.stderr)
        return 2
    dataset = result.dataset
    info = dataset.info
    with tracking.start_run(
        run_name=f"prepare-{dataset.source}", experiment=args.experiment, tags={"mammo.entry": "prepare"}
    ):
        tracking.log_params({
            "data_source": dataset.source, "data_digest": dataset.digest, "image_size": dataset.image_size,
            "prepared_dir": str(dataset.path), "reused": result.reused,
        })  # fmt: skip
        tracking.log_metrics({"patches": info["count"], "skipped": info["skipped"]})
        tracking.log_prepared_input(dataset, context="prepare")
        tracking.log_dict(info, "dataset.json")
        skip_report = dataset.path / SKIPPED_FILE
        if skip_report.is_file():
            tracking.log_dataframe(pd.read_csv(skip_report), tracking.SKIP_REPORT_FILE)
    verb = "already prepared (no-op, same source and options)" if result.reused else "prepared"
    print(f"{verb}: {dataset.path} — {info['count']} patches {info['counts']}, digest {dataset.digest}")
    if info["skipped"]:
        print(f"skipped {info['skipped']} records: {info['skipped_reasons']} (details in {tracking.SKIP_REPORT_FILE})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
