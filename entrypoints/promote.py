"""`promote` entry point: register the best run's model and move `champion` only if it beats the champion."""

from __future__ import annotations

import argparse
import sys

from entrypoints import optional_float, optional_str
from mammo import gate, registry, tracking
from mammo.errors import MammoError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="promote", description=__doc__)
    parser.add_argument("--model-name", type=optional_str, default=tracking.MODEL_NAME)
    parser.add_argument(
        "--run-id", type=optional_str, help="the candidate run (default: the best finished run with a model)"
    )
    parser.add_argument(
        "--select-metric", type=optional_str, default="val_auc",
        help="validation metric that picks the candidate when --run-id is unset (higher is better)",
    )  # fmt: skip
    parser.add_argument(
        "--gate-metric", type=optional_str, default="test_accuracy", help=f"one of {', '.join(gate.GATE_METRICS)}"
    )
    parser.add_argument(
        "--data", type=optional_str, help="prepared dataset both models are scored on (default: the candidate's)"
    )
    parser.add_argument("--alias", type=optional_str, default=tracking.ALIAS_CHAMPION)
    parser.add_argument("--min-delta", type=optional_float, default=0.0)
    parser.add_argument("--alpha", type=optional_float, default=0.05, help="McNemar significance level")
    parser.add_argument("--experiment", type=optional_str, help=f"MLflow experiment (default {tracking.EXPERIMENT})")
    args = parser.parse_args(argv)
    # "" from MLproject means "use the default"; argparse's default only covers an absent flag.
    defaults = {"model_name": tracking.MODEL_NAME, "select_metric": "val_auc", "gate_metric": "test_accuracy",
                "alias": tracking.ALIAS_CHAMPION, "min_delta": 0.0, "alpha": 0.05}  # fmt: skip
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = registry.promote(
            model_name=args.model_name, run_id=args.run_id, experiment=args.experiment,
            select_metric=args.select_metric, gate_metric=args.gate_metric, data=args.data, alias=args.alias,
            min_delta=args.min_delta, alpha=args.alpha,
        )  # fmt: skip
    except MammoError as error:
        print(f"promote: error: {error}", file=sys.stderr)
        return 2
    _log_decision(result, args)
    decision = result.decision
    if not result.registered:
        print(f"{result.model_name}: {decision.reason}")
        return 0
    print(f"registered {result.model_name} version {result.version} from run {result.run_id} (alias challenger)")
    print(f"{decision.status.upper()}: {decision.reason}")
    if decision.promoted:
        moved = f"; previous {result.alias} version {result.previous_version} is now {registry.previous_alias(result.alias)}"
        print(f"{result.alias} -> version {result.version}" + (moved if result.previous_version else ""))
    else:
        print(f"{result.alias} stays at version {result.previous_version}")
    return 0


def _log_decision(result: registry.PromotionResult, args: argparse.Namespace) -> None:
    """A `promote` run records the decision next to the training runs (and fills the run `mlflow run` opened)."""
    decision = result.decision
    with tracking.start_run(run_name=f"promote-v{result.version}", experiment=args.experiment,
                            tags={"mammo.entry": "promote", gate.STATUS_TAG: decision.status}):  # fmt: skip
        tracking.log_params({
            "model_name": result.model_name, "alias": result.alias, "candidate_run_id": result.run_id,
            "version": result.version, "registered": result.registered, "gate_metric": decision.gate_metric,
            "min_delta": args.min_delta, "alpha": args.alpha, "prepared_dir": str(result.data_path),
        })  # fmt: skip
        scores = {"gate_candidate_score": decision.candidate_score, "gate_champion_score": decision.champion_score,
                  "mcnemar_p": decision.p_value}  # fmt: skip
        tracking.log_metrics({name: value for name, value in scores.items() if value is not None})


if __name__ == "__main__":
    raise SystemExit(main())
