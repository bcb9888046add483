"""Thin argparse entry points, one per MLproject entry (`python -m entrypoints.X`)."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

from mammo.core.booleans import parse_boolean
from mammo.core.compat import parser_actions
from mammo.core.console import quiet_console
from mammo.core.errors import user_error_message

quiet_console()  # TensorFlow's and MLflow's start-up notes carry nothing a user acts on (mammo.core.console)


DEFAULT = "default"  # what the MLproject passes for "the tool's own default" (blank would be logged as '')


def _unset(text: str) -> bool:
    return text.strip() in ("", DEFAULT)


def optional_int(text: str) -> int | None:
    """argparse type: "" or "default" (an unset MLproject parameter) means None, i.e. the default."""
    return None if _unset(text) else int(float(text))


def optional_float(text: str) -> float | None:
    return None if _unset(text) else float(text)


def optional_str(text: str) -> str | None:
    return None if _unset(text) else text


def switch(text: str) -> bool:
    """argparse type of a flag that MLproject passes a value to (`--quiet false`); alone it means true."""
    if _unset(text):
        return False
    try:
        return parse_boolean(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def add_switch(parser: argparse.ArgumentParser, flag: str, *, help: str) -> None:
    """A store-true flag that also takes true/false, as the MLproject passes every parameter a value."""
    parser.add_argument(flag, type=switch, nargs="?", const=True, default=False, help=help)


# Flags that override one TrainConfig field each (the CLI spelling uses dashes).
OVERRIDES = (
    "filters", "dense_units", "dropout", "l2", "learning_rate", "lr_decay", "batch_size", "epochs", "patience",
    "augment", "image_size", "seed", "split_by", "val_fraction", "standardize", "threshold",
    "weights", "unfreeze_blocks", "finetune_learning_rate", "head_epochs",
)  # fmt: skip
OVERRIDE_HELP = {
    "filters": "Conv2D filters per block, e.g. 32-64-128-256", "dense_units": "hidden Dense units (0 = none)",
    "dropout": "dropout rate in [0, 1)", "l2": "L2 strength on every Conv2D kernel, e.g. 5e-5",
    "learning_rate": "e.g. 1e-3", "lr_decay": "InverseTimeDecay rate per step (RMSprop's old decay=)",
    "batch_size": "images per step", "epochs": "maximum epochs", "patience": "early-stopping patience (0 = off)",
    "augment": "augmentation strength (0 off, 1 the published ImageDataGenerator)", "image_size": "train at this side",
    "seed": "seeds everything", "split_by": "validation split by patient or image", "val_fraction": "e.g. 0.2",
    "standardize": "true/false: centre and scale the input with the train split's mean/std",
    "threshold": "decision threshold chosen on validation: fixed (0.5), youden or sensitivity:<target, e.g. 0.9>",
    "weights": "backbones: imagenet (Keras's download, cached under KERAS_HOME), none, or a weights file's path",
    "unfreeze_blocks": "backbones: top blocks trained in phase 2 (0 = frozen)",
    "finetune_learning_rate": "backbones: phase 2's learning rate, e.g. 1e-5",
    "head_epochs": "backbones: phase 1 (head only) epochs; 0 = half of --epochs",
}  # fmt: skip


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--data, --schedule, --precision, --experiment and one flag per overridable hyperparameter."""
    from mammo import tracking
    from mammo.core.precision import PRECISIONS
    from mammo.model.variants import SCHEDULES

    parser.add_argument("--data", type=optional_str, help="prepared dataset folder (default: synthetic, prepared once)")
    parser.add_argument("--schedule", choices=tuple(SCHEDULES), default="quick",
                        help="quick (2-core CPU) or published (500 epochs, patience 80) (default %(default)s)")  # fmt: skip
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="Keras dtype policy; auto picks the fastest here (default %(default)s)")  # fmt: skip
    parser.add_argument("--experiment", type=optional_str, help=f"MLflow experiment (default {tracking.EXPERIMENT})")
    group = parser.add_argument_group("hyperparameters (default: the variant's value under the schedule)")
    for name in OVERRIDES:
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, type=optional_str, metavar="VALUE",
                           help=OVERRIDE_HELP[name])  # fmt: skip


def config_from_args(args: argparse.Namespace, *, variant: str, seed: int | None = None):  # -> TrainConfig
    """The run's TrainConfig: the variant's row, the schedule, then every flag given (validated)."""
    from mammo.model.variants import make_config

    overrides = {name: getattr(args, name) for name in OVERRIDES}
    if seed is not None:
        overrides["seed"] = seed
    return make_config(variant, schedule=args.schedule, precision=args.precision, **overrides)


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse `argv` the way MLproject calls an entry point, in one place for every entry point.

    `mlflow run -P name=value` passes undeclared parameters as `--name value` with underscores, and
    declared ones as "" when unset: so `--model_name` is read as `--model-name`, and "" (None from
    the optional_* types) means the flag's default.
    """
    actions = parser_actions(parser)
    known = {option for action in actions for option in action.option_strings}
    args = parser.parse_args([_dashed(token, known) for token in (sys.argv[1:] if argv is None else argv)])
    for action in actions:
        if action.dest == "help" or getattr(args, action.dest, None) is not None or action.default is None:
            continue
        default = action.default
        if isinstance(default, str) and callable(action.type):
            default = action.type(default)
        setattr(args, action.dest, default)
    return args


def _dashed(token: str, known: set[str]) -> str:
    name, equals, value = token.partition("=")
    if name.startswith("--") and "_" in name and name not in known:
        dashed = "--" + name[2:].replace("_", "-")
        if dashed in known:
            return dashed + equals + value
    return token


def report_errors(prog: str) -> Callable[[Callable[[list[str] | None], int]], Callable[[list[str] | None], int]]:
    """Wrap an entry point's `main`: errors a user can cause become one line on stderr and exit status 2.

    What counts as user-caused is decided in one place (`mammo.core.errors.user_error_message`); anything
    else is a bug and keeps its traceback. Ctrl-C exits 130 without one.
    """

    def wrap(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
        @functools.wraps(main)
        def guarded(argv: list[str] | None = None) -> int:
            try:
                return main(argv)
            except KeyboardInterrupt:
                print(f"{prog}: interrupted", file=sys.stderr)
                return 130
            except Exception as error:
                message = user_error_message(error)
                if message is None:
                    raise
                print(f"{prog}: error: {message}", file=sys.stderr)
                return 2

        return guarded

    return wrap
