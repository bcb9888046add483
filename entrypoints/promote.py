"""`promote` entry point: register the best run's model and move `champion` only if it beats the champion."""

from __future__ import annotations

import argparse

from entrypoints import add_switch, optional_float, optional_str, parse, report_errors
from mammo import tracking
from mammo.registry import gate, promotion, versions


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="promote", description=__doc__)
    add = parser.add_argument
    add("--model-name", type=optional_str, default=tracking.MODEL_NAME, help="registered model (default %(default)s)")
    add("--run-id", type=optional_str, help="the candidate run (default: the best finished run with a model)")
    add("--select-metric", type=optional_str, default="val_auc",
        help="validation metric at the kept checkpoint that picks the candidate: val_auc, val_accuracy or val_loss "
        "(default %(default)s)")  # fmt: skip
    add("--gate-metric", type=optional_str, default="test_accuracy",
        help=f"one of {', '.join(gate.GATE_METRICS)} (default %(default)s)")  # fmt: skip
    add("--data", type=optional_str,
        help="prepared dataset to promote within: only runs trained on it are ranked, and both models are scored on "
        "its test split (default: the champion's dataset, else the experiment's only one)")  # fmt: skip
    add("--alias", type=optional_str, default=tracking.ALIAS_CHAMPION, help="alias to move (default %(default)s)")
    add("--min-delta", type=optional_float, default=0.0, help="required improvement (default %(default)s)")
    add("--alpha", type=optional_float, default=0.05, help="McNemar significance level (default %(default)s)")
    add("--experiment", type=optional_str, help=f"MLflow experiment to search (default {tracking.EXPERIMENT})")
    add_switch(parser, "--rebaseline",
               help="the champion was trained on another dataset: score both on this one's test split and replace it "
               "if the candidate is better there (the model card records the re-baseline)")  # fmt: skip
    add_switch(
        parser,
        "--allow-image-split",
        help="also rank runs validated per image (split_by=image, leaky: views of one lesion on both sides)",
    )
    return parse(parser, argv)


@report_errors("promote")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = promotion.promote(
        model_name=args.model_name, run_id=args.run_id, experiment=args.experiment, select_metric=args.select_metric,
        gate_metric=args.gate_metric, data=args.data, alias=args.alias, min_delta=args.min_delta, alpha=args.alpha,
        rebaseline=args.rebaseline, allow_image_split=args.allow_image_split,
    )  # fmt: skip
    promotion.log_decision(result, experiment=args.experiment, min_delta=args.min_delta, alpha=args.alpha)
    decision = result.decision
    if decision.candidate_score != decision.candidate_score:  # NaN: nothing was gated (already the champion)
        print(f"{result.model_name}: {decision.reason}")
        return 0
    how = "registered" if result.registered else "reusing"
    print(f"{how} {result.model_name} version {result.version} from run {result.run_id} (alias challenger)")
    if result.rebaselined:
        print(f"re-baseline: the {result.alias} was trained on another dataset; both scored on {result.data_path}")
    print(f"{decision.status.upper()}: {decision.reason}")
    if decision.promoted:
        moved = f"; previous {result.alias} version {result.previous_version} is now {versions.previous_alias(result.alias)}"
        print(f"{result.alias} -> version {result.version}" + (moved if result.previous_version else ""))
    else:
        print(f"{result.alias} stays at version {result.previous_version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
