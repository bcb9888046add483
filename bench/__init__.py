"""Performance benchmarks: each prints ratios measured in one run (`python -m bench.<name>`)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from mammo.core.console import quiet_console

quiet_console()  # every benchmark's output is its figures, not TensorFlow's or MLflow's start-up notes


def save_results(results: dict[str, Any], out: str | Path | None) -> None:
    """Write a benchmark's figures as JSON to `out` (nothing when no --out was given)."""
    if out:
        Path(out).write_text(json.dumps(results, indent=2) + "\n")


def machine() -> dict[str, str]:
    """What every figure is quoted with: the CPU (model, family/model, the flags that decide speed
    here: avx2, avx512*, amx*), the date and the load average (other work on a shared machine)."""
    fields: dict[str, str] = {}
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if key.strip() == "flags":
                break
    flags = fields.get("flags", "").split()
    wanted = sorted(flag for flag in flags if flag == "avx2" or flag.startswith(("avx512", "amx")))
    cpu = (
        f"{fields.get('model name', 'unknown CPU')} (family {fields.get('cpu family', '?')} model "
        f"{fields.get('model', '?')}), {os.cpu_count()} CPUs, {' '.join(wanted) or 'no avx2'}"
        f"{'' if any(flag.startswith('avx512') for flag in flags) else ', no avx512'}"
    )
    return {"cpu": cpu, "date": time.strftime("%Y-%m-%d %H:%M %Z"), "load_average": load_average()}


def load_average() -> str:
    """The 1/5/15-minute load averages, e.g. "2.31 2.05 1.95"."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())
