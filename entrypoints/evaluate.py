"""`evaluate` entry point: score any model URI on a prepared dataset's test split, as a new run.

The run gets the same test metrics, plots and predictions.csv as a training run
(`reports.log_test_report`), so an evaluation sits beside training runs in the UI's columns.
`mlflow.models.evaluate(model_type="classifier")` is run on the predictions we already made
(static-prediction mode) and adds MLflow's standard classifier metrics (precision, recall, F1,
confusion counts) and its confusion-matrix plot. It is not given the model itself: our pyfunc
takes image patches, not a feature table, and has no `predict_proba`, so MLflow would draw no
ROC/PR curve; ours (plots/roc.png) and the calibration and worst-patch plots come from the report.
"""

from __future__ import annotations

import argparse
import sys

from mlflow.exceptions import MlflowException

from entrypoints import optional_str
from mammo import evaluation, registry, reports, tracking
from mammo.errors import MammoError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="evaluate", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-uri", type=optional_str, default=f"models:/{tracking.MODEL_NAME}@{tracking.ALIAS_CHAMPION}",
        help="models:/mammo-cnn@champion, models:/mammo-cnn/3, runs:/<run_id>/model, models:/<model_id>",
    )  # fmt: skip
    parser.add_argument(
        "--data", type=optional_str, help="prepared dataset folder (default: the one the model was trained on)"
    )
    parser.add_argument("--experiment", type=optional_str, help=f"MLflow experiment (default {tracking.EXPERIMENT})")
    parser.add_argument("--no-plots", action="store_true", help="metrics and predictions only")
    args = parser.parse_args(argv)
    args.model_uri = args.model_uri or f"models:/{tracking.MODEL_NAME}@{tracking.ALIAS_CHAMPION}"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        dataset = registry.dataset_for_model(args.model_uri, args.data)
        indices, patches, labels = registry.held_out_patches(dataset)
        probabilities = registry.score_model(args.model_uri, patches)
    except (MammoError, MlflowException) as error:
        print(f"evaluate: error: {error}", file=sys.stderr)
        return 2
    with tracking.start_run(run_name="evaluate", experiment=args.experiment, tags={"mammo.entry": "evaluate"}) as run:
        tracking.log_params({
            "model_uri": args.model_uri, "data_source": dataset.source, "data_digest": dataset.digest,
            "image_size": dataset.image_size, "prepared_dir": str(dataset.path),
        })  # fmt: skip
        tracking.log_prepared_input(dataset, context="evaluation")
        metrics = reports.log_test_report(
            probabilities=probabilities, dataset=dataset, indices=indices, plots=not args.no_plots
        )
        standard = tracking.log_classifier_evaluation(
            labels=labels, predictions=evaluation.predict_labels(probabilities)
        )
    print(f"evaluated {args.model_uri} on {len(labels)} test patches of {dataset.path} (run {run.info.run_id})")
    for name in tracking.TEST_METRICS:
        print(f"  {name} = {metrics[name]:.4f}")
    print("  mlflow.models.evaluate: " + ", ".join(f"{name} = {value:.4g}" for name, value in sorted(standard.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
