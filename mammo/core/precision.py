"""The dtype policy: which Keras precision a run trains in, resolved once from what the hardware runs fastest.

`choose_precision` turns the `precision` option ("auto" or an explicit policy) into a Keras dtype
policy name; training resolves it once and hands the result to `variants.build_model`.
"""

from __future__ import annotations

from pathlib import Path

from mammo.core.errors import ConfigError

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo does not exist, e.g. macOS)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def choose_precision(requested: str = "auto", *, flags: set[str] | None = None, gpus: int | None = None) -> str:
    """The Keras dtype policy for a run: an explicit request wins; "auto" picks what is faster here.

    auto: mixed_float16 on a GPU (tensor cores); mixed_bfloat16 on CPUs whose flags show
    avx512_bf16 or amx_bf16 (oneDNN then runs bf16 convolutions natively); float32 otherwise.
    Without those flags bf16 is emulated and much slower: on this project's 2-core AMD EPYC
    (Zen 3, avx2 only) model5 training at 150×150 ran at 19–21 img per CPU-second in float32 and
    2.1–2.2 in mixed_bfloat16 (≈9× slower), so "auto" must not pick bf16 just because TF accepts it.
    """
    if requested not in PRECISIONS:
        raise ConfigError(f"parameter precision={requested!r} is invalid: must be one of {PRECISIONS}.")
    if requested != "auto":
        return requested
    if gpus is None:
        import tensorflow as tf

        gpus = len(tf.config.list_physical_devices("GPU"))
    if gpus > 0:
        return "mixed_float16"
    if {"avx512_bf16", "amx_bf16"} & (cpu_flags() if flags is None else flags):
        return "mixed_bfloat16"
    return "float32"
