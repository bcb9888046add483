"""`predict` entry point: a model URI + a folder of cropped-ROI DICOMs or PNG/NumPy patches → a CSV."""

from __future__ import annotations

import argparse
from pathlib import Path

from entrypoints import optional_str, parse, report_errors
from mammo import tracking
from mammo.serve import inference

CHAMPION = f"models:/{tracking.MODEL_NAME}@{tracking.ALIAS_CHAMPION}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="predict", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-uri", type=optional_str, default=CHAMPION, help="model to score with (default %(default)s)"
    )
    parser.add_argument("--input", type=optional_str, help="folder (searched recursively) or a single file")
    parser.add_argument(
        "--output", type=optional_str, default="predictions.csv", help="CSV to write (default %(default)s)"
    )
    parser.add_argument("--experiment", type=optional_str, help=f"MLflow experiment (default {tracking.EXPERIMENT})")
    args = parse(parser, argv)
    if args.input is None:
        parser.error("--input is required: a folder of cropped-ROI DICOMs or PNG/NumPy patches, or one file")
    return args


@report_errors("predict")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root, output = Path(args.input), Path(args.output)
    table = inference.predict_folder(args.model_uri, root)
    output.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(output, index=False)
    inference.log_predictions(table, model_uri=args.model_uri, root=root, output=output, experiment=args.experiment)
    failed = inference.failure_reasons(table)
    print(f"predicted {len(table) - sum(failed.values())} of {len(table)} files with {args.model_uri} -> {output}")
    if failed:
        by_reason = ", ".join(f"{reason} {count}" for reason, count in sorted(failed.items()))
        print(f"{sum(failed.values())} files not scored, by reason: {by_reason} (the CSV's error column says why)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
