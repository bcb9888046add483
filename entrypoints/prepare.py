"""`prepare` entry point: a source → the prepared dataset, logged as an MLflow run's input."""

from __future__ import annotations

import argparse
import os

from entrypoints import add_switch, optional_int, optional_str, parse, report_errors
from mammo.data.prepare import ERROR_POLICIES, PATCH_MODES, SOURCES, prepare


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="prepare", description=__doc__)
    parser.add_argument("--source", choices=SOURCES, default="synthetic")
    parser.add_argument(
        "--data-dir", type=optional_str, help="the DICOM tree (cbis-ddsm) or the folder of .npy files (tensors)"
    )
    parser.add_argument(
        "--csv-dir", type=optional_str, help="folder of the four case-description CSVs (default: --data-dir)"
    )
    parser.add_argument(
        "--out",
        type=optional_str,
        help="output folder (default <data home>/prepared/<source>-<patch>-<size>px-<options hash>; the data home "
        "is $MAMMO_DATA_HOME, else the checkout's data/)",
    )
    parser.add_argument(
        "--image-size", type=optional_int, default=150, help="patch side in pixels (default %(default)s)"
    )
    parser.add_argument("--patch", choices=PATCH_MODES, default="crop", help="crop: the CSV's cropped image; roi: cut "
                        "from the full mammogram around the ROI mask (default %(default)s)")  # fmt: skip
    parser.add_argument("--cases", type=optional_int, help="synthetic only: number of case rows to generate")
    parser.add_argument("--seed", type=optional_int, default=0, help="synthetic only (default %(default)s)")
    parser.add_argument("--on-error", choices=ERROR_POLICIES, default="raise",
                        help="raise: stop at the first bad record; skip: skip and count it (default %(default)s)")  # fmt: skip
    parser.add_argument("--workers", type=optional_int, default=1, help="processes reading DICOM (default %(default)s)")
    parser.add_argument(
        "--experiment",
        type=optional_str,
        default=None,
        help="MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME or mammo-mass-calc)",
    )
    add_switch(parser, "--no-progress", help="no progress bars")
    return parse(parser, argv)


@report_errors("prepare")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = prepare(
        source=args.source, data_dir=args.data_dir, csv_dir=args.csv_dir, out=args.out,
        image_size=args.image_size, patch=args.patch, cases=args.cases, seed=args.seed,
        on_error=args.on_error, workers=args.workers, progress=not args.no_progress,
    )  # fmt: skip
    if not result.reused or os.environ.get("MLFLOW_RUN_ID"):  # a no-op logs nothing, unless `mlflow run` opened a run
        from mammo import tracking  # MLflow takes ~3 s to import: a repeat prepare never waits for it

        tracking.log_prepare_run(result.dataset, reused=result.reused, experiment=args.experiment)
    info = result.dataset.info
    verb = "already prepared (no-op, same source and options)" if result.reused else "prepared"
    print(f"{verb}: {result.dataset.path} — {info['count']} patches {info['counts']}, digest {result.dataset.digest}")
    if info["skipped"]:
        print(
            f"skipped {info['skipped']} records: {info['skipped_reasons']} (details in skip_report.csv of the prepare run)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
