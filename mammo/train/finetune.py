"""Two-phase fine-tuning of a pretrained backbone, as the Keras transfer-learning guide does it.

Phase 1 trains the head alone, the backbone frozen (and its BatchNorm in inference mode, which
`backbones.build_backbone_model` fixes by calling it with training=False). Phase 2 unfreezes the
backbone's top `unfreeze_blocks` blocks (BatchNorm layers excepted) and recompiles at
`finetune_learning_rate`, continuing the same epoch counter (`initial_epoch`), so the per-epoch
metrics, the pruner's steps and the kept best-val_loss checkpoint run across both phases as one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras

from mammo.model.backbones import backbone_for, unfreeze_top_blocks
from mammo.model.variants import TrainConfig

PHASE_METRIC = "phase"  # per-epoch: 1 = head only, 2 = top blocks unfrozen


def head_epochs(config: TrainConfig) -> int:
    """Phase 1's epochs: `head_epochs`, else half of `epochs` rounded up; all of them when nothing unfreezes."""
    if config.unfreeze_blocks == 0:
        return config.epochs
    return config.head_epochs or math.ceil(config.epochs / 2)


class PhaseMarker(keras.callbacks.Callback):
    """Writes the current phase into each epoch's logs, so it is logged and kept in the history."""

    def __init__(self) -> None:
        super().__init__()
        self.phase = 1

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs[PHASE_METRIC] = float(self.phase)


def fit_in_phases(
    model: keras.Model, config: TrainConfig, *, compile_model: Callable[[keras.Model, float], None],
    fit_epochs: Callable[..., keras.callbacks.History], marker: PhaseMarker,
) -> dict[str, list[float]]:  # fmt: skip
    """Run phase 1 then phase 2 through `fit_epochs(initial_epoch=, epochs=)`; the merged per-epoch logs.

    `compile_model(model, learning_rate)` compiles with the run's optimizer at that rate (Keras
    needs a recompile after `trainable` changes). The callbacks `fit_epochs` passes (the kept
    checkpoint, the MLflow logger, the pruner) see one run of epochs 1..N.
    """
    first_phase = head_epochs(config)
    marker.phase = 1
    compile_model(model, config.learning_rate)
    logs = _history(fit_epochs(initial_epoch=0, epochs=first_phase))
    done = len(logs.get("loss", []))
    if config.unfreeze_blocks == 0 or done >= config.epochs:  # phase 2 follows an early stop of phase 1 too
        return logs
    unfreeze_top_blocks(model, backbone_for(config), config.unfreeze_blocks)
    marker.phase = 2
    compile_model(model, config.finetune_learning_rate)
    second = _history(fit_epochs(initial_epoch=done, epochs=config.epochs))
    return {name: logs.get(name, []) + second.get(name, []) for name in dict.fromkeys([*logs, *second])}


def _history(history: keras.callbacks.History) -> dict[str, list[float]]:
    return {name: [float(value) for value in values] for name, values in history.history.items()}
