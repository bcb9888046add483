"""The one reading of a boolean written as text (a CLI flag, an MLproject parameter, a logged param).

MLproject passes every parameter as a string and MLflow logs params as strings, so "true", "yes",
"on" and "1" (any case, spaces around) are true and "false", "no", "off" and "0" are false,
wherever they are read. Pure: no imports beyond the standard library.
"""

from __future__ import annotations

TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


def parse_boolean(text: str) -> bool:
    """`text` as a boolean; a ValueError naming the accepted words for anything else."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"expected true or false ({'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)}), got {text!r}")
