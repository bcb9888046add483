"""Training img/s of each pretrained backbone at 224 px on this machine, float32 and mixed_bfloat16.

Each backbone is built as a run builds it (`backbones.build_backbone_model`, weights none: the
speed does not depend on the values), compiled as `training.compile_model` does, and trained on
in-memory batches for both fine-tuning phases: phase 1 (backbone frozen, head only) and phase 2
(the variant's default top blocks unfrozen). One warm-up step (tracing) is left out of the timing.
mixed_bfloat16 is measured only where the CPU has avx512_bf16 or amx_bf16 (elsewhere it is emulated
and ~9× slower, `mammo.core.precision`), and its speed-up over float32 is printed per backbone.

    python -m bench.backbones [--image-size 224] [--batch 16] [--steps 3] [--backbones vgg16,...] [--out FILE]
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np

from bench import machine, save_results
from mammo.core.precision import cpu_flags
from mammo.model.backbones import BACKBONES, backbone_for, build_backbone_model, unfreeze_top_blocks
from mammo.model.variants import make_config
from mammo.train.training import compile_model


def images_per_second(model: keras.Model, images: np.ndarray, labels: np.ndarray, *, steps: int) -> float:
    model.train_on_batch(images, labels)  # tracing
    started = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(images, labels)
    return steps * len(images) / (time.perf_counter() - started)


def measure(name: str, *, precision: str, image_size: int, batch: int, steps: int) -> dict[str, float]:
    keras.utils.set_random_seed(0)
    config = make_config(name, weights="none", image_size=image_size, batch_size=batch, precision=precision)
    model, _ = build_backbone_model(config, dtype_policy=precision)
    rng = np.random.default_rng(0)
    images = rng.random((batch, image_size, image_size, 1), dtype=np.float32)
    labels = rng.integers(0, 2, batch).astype(np.float32)
    compile_model(model, config, precision=precision)
    head = images_per_second(model, images, labels, steps=steps)
    unfreeze_top_blocks(model, backbone_for(config), config.unfreeze_blocks)
    compile_model(model, config, precision=precision, learning_rate=config.finetune_learning_rate)
    top = images_per_second(model, images, labels, steps=steps)
    keras.backend.clear_session()
    return {"phase1_img_s": head, "phase2_img_s": top}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.backbones", description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args(argv)
    precisions = ["float32"]
    if {"avx512_bf16", "amx_bf16"} & cpu_flags():
        precisions.append("mixed_bfloat16")
    results: dict = {"machine": machine(), "image_size": args.image_size, "batch": args.batch, "steps": args.steps}
    print(f"{results['machine']}; {args.image_size} px, batch {args.batch}, {args.steps} timed steps")
    for name in args.backbones.split(","):
        row = {precision: measure(name, precision=precision, image_size=args.image_size, batch=args.batch,
                                  steps=args.steps) for precision in precisions}  # fmt: skip
        results[name] = row
        text = "; ".join(
            f"{precision} phase 1 {row[precision]['phase1_img_s']:.1f}, phase 2 {row[precision]['phase2_img_s']:.1f} img/s"
            for precision in precisions
        )
        if "mixed_bfloat16" in row:
            text += "; bf16/float32 " + ", ".join(
                f"{row['mixed_bfloat16'][key] / row['float32'][key]:.2f}×" for key in ("phase1_img_s", "phase2_img_s")
            )
        print(f"{name}: {text}", flush=True)
    save_results(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
