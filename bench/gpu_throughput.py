"""Model 5 training throughput on whatever accelerator Keras sees, per precision policy.

Backend-agnostic (KERAS_BACKEND=tensorflow|jax|torch): it builds the published model5 with
`mammo.model.variants.build_model` and trains it with `fit` on random 150×150 patches, so it measures
the model and the precision policy, not the input pipeline. Prints img/s per policy and the
ratios to float32, measured in one run. Usage:

    KERAS_BACKEND=jax python -m bench.gpu_throughput --images 4096 --epochs 3 --out result.json
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np

from bench import save_results
from mammo.model.variants import build_model, make_config, make_optimizer

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


def measure(policy: str, *, images: int, epochs: int, batch_size: int, image_size: int) -> float:
    """img/s of model5 `fit` under `policy`, after one warm-up epoch (compilation excluded)."""
    config = make_config("model5", batch_size=batch_size, image_size=image_size, epochs=epochs)
    keras.utils.set_random_seed(0)
    model = build_model(config, dtype_policy=policy, pixel_stats=(0.5, 0.29))  # uniform [0, 1) input
    model.compile(optimizer=make_optimizer(config), loss="binary_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.random((images, image_size, image_size, 1), dtype=np.float32)  # (N, S, S, 1)
    y = rng.integers(0, 2, size=(images, 1)).astype(np.float32)
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)  # warm-up: tracing / compilation
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)
    return images * epochs / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=150)
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--out", help="write the figures as JSON here too")
    args = parser.parse_args(argv)
    devices = [str(d) for d in keras.distribution.list_devices()]
    results = {"backend": keras.backend.backend(), "devices": devices, "batch_size": args.batch_size, "img_per_s": {}}
    for policy in args.policies.split(","):
        results["img_per_s"][policy] = round(
            measure(
                policy, images=args.images, epochs=args.epochs, batch_size=args.batch_size, image_size=args.image_size
            ),
            1,
        )
        print(f"{policy:>15}: {results['img_per_s'][policy]:9.1f} img/s", flush=True)
    base = results["img_per_s"].get("float32")
    if base:
        results["ratio_to_float32"] = {p: round(v / base, 2) for p, v in results["img_per_s"].items()}
        print("ratios to float32:", results["ratio_to_float32"])
    save_results(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
