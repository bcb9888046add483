"""Performance benchmarks: each prints ratios measured in one run (`python -m bench.<name>`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def save_results(results: dict[str, Any], out: str | Path | None) -> None:
    """Write a benchmark's figures as JSON to `out` (nothing when no --out was given)."""
    if out:
        Path(out).write_text(json.dumps(results, indent=2) + "\n")
