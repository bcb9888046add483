"""`evaluate` entry point: score any model URI on a prepared dataset's test split, as a new run."""

from __future__ import annotations

import argparse

from entrypoints import add_switch, optional_str, parse, report_errors
from mammo import tracking
from mammo.registry import scoring

CHAMPION = f"models:/{tracking.MODEL_NAME}@{tracking.ALIAS_CHAMPION}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="evaluate", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-uri", type=optional_str, default=CHAMPION,
        help="models:/mammo-cnn@champion (default), models:/mammo-cnn/3, runs:/<run_id>/model, models:/<model_id>",
    )  # fmt: skip
    parser.add_argument(
        "--data", type=optional_str, help="prepared dataset folder (default: the one the model was trained on)"
    )
    parser.add_argument("--experiment", type=optional_str, help=f"MLflow experiment (default {tracking.EXPERIMENT})")
    add_switch(parser, "--no-plots", help="metrics and predictions only")
    return parse(parser, argv)


@report_errors("evaluate")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = scoring.evaluate_model(args.model_uri, data=args.data, experiment=args.experiment, plots=not args.no_plots)
    print(f"evaluated {args.model_uri} on {result.patches} test patches of {result.dataset.path} (run {result.run_id})")
    for name in tracking.TEST_METRICS:
        print(f"  {name} = {result.metrics[name]:.4f}")
    standard = ", ".join(f"{name} = {value:.4g}" for name, value in sorted(result.standard.items()))
    print(f"  mlflow.models.evaluate: {standard}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
