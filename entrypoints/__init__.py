"""Thin argparse entry points, one per MLproject entry (`python -m entrypoints.X`)."""

from __future__ import annotations


def optional_int(text: str) -> int | None:
    """argparse type: MLproject passes "" for an unset optional parameter."""
    return None if text.strip() == "" else int(float(text))


def optional_float(text: str) -> float | None:
    return None if text.strip() == "" else float(text)


def optional_str(text: str) -> str | None:
    return None if text.strip() == "" else text
