"""Thin argparse entry points, one per MLproject entry (`python -m entrypoints.X`)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from mammo.errors import user_error_message


def optional_int(text: str) -> int | None:
    """argparse type: MLproject passes "" for an unset optional parameter."""
    return None if text.strip() == "" else int(float(text))


def optional_float(text: str) -> float | None:
    return None if text.strip() == "" else float(text)


def optional_str(text: str) -> str | None:
    return None if text.strip() == "" else text


def report_errors(prog: str) -> Callable[[Callable[[list[str] | None], int]], Callable[[list[str] | None], int]]:
    """Wrap an entry point's `main`: errors a user can cause become one line on stderr and exit status 2.

    What counts as user-caused is decided in one place (`mammo.errors.user_error_message`); anything
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
