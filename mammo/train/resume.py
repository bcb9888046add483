"""A checkpoint of one training run at the end of every epoch, and the resume that continues it.

The checkpoint holds everything the next epoch depends on: every model variable (the dropout
layers' seed counters included), the optimizer's variables (RMSprop's velocities and the step
count that places the learning-rate schedule), the kept-best weights and loss, early stopping's
wait and best, and the per-epoch history; the input pipeline needs only the epoch, from which
`pipeline.train_stream` recreates its shuffle and augmentation sequence. It is one `.npz` file in a
local folder named after the run (`$MAMMO_CHECKPOINT_DIR/<run id>`, default `checkpoints/`),
replaced atomically each epoch, so a kill at any moment leaves the previous epoch's whole. For a
team it is also uploaded to the run's artifacts every N epochs, and fetched from there when the
resuming machine has no local copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from mammo.core.errors import ConfigError

STATE_FILE = "state.npz"
ROOT_ENV = "MAMMO_CHECKPOINT_DIR"
DEFAULT_ROOT = "checkpoints"


def checkpoint_folder(run_id: str) -> Path:
    """The local folder of a run's checkpoint."""
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT) / run_id


def weights_digest(weights: Sequence[np.ndarray]) -> str:
    """SHA-256 of the weights' bytes in order: equal digests mean bit-identical weights."""
    digest = hashlib.sha256()
    for array in weights:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


@dataclass
class Start:
    """Where a run starts: epoch 0 for a new run, the checkpoint's epoch for a resumed one."""

    epoch: int = 0  # epochs done
    history: dict[str, list[float]] = field(default_factory=dict)
    stopped: bool = False  # early stopping had ended the training
    fit_seconds: float = 0.0  # model.fit's wall time so far

    def done(self, epochs: int) -> bool:
        """Nothing is left to fit (the process died while reporting)."""
        return self.stopped or self.epoch >= epochs


class EpochCheckpoint(keras.callbacks.Callback):
    """Writes the checkpoint after each epoch; `restore` puts a model back at the checkpoint's epoch.

    Place it after the callbacks whose state it keeps (kept-best weights, early stopping) and
    before the one that logs epoch metrics, so an epoch's metrics are logged only once its
    checkpoint exists: a resumed run then never logs an epoch twice.
    """

    def __init__(
        self, folder: Path, *, fingerprint: Mapping[str, Any], upload_every: int = 0,
        upload: Callable[[Path], None] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.folder = Path(folder)
        self.fingerprint = {key: str(value) for key, value in fingerprint.items()}
        self.upload_every, self.upload = upload_every, upload
        self.best: Any = None  # training.BestWeights
        self.early_stopping: keras.callbacks.EarlyStopping | None = None
        self.start = Start()
        self._early_stopping_state: dict[str, Any] | None = None
        self._history: dict[str, list[float]] = {}
        self._fit_started = 0.0

    @property
    def path(self) -> Path:
        return self.folder / STATE_FILE

    def exists(self) -> bool:
        return self.path.is_file()

    def watch(self, *, best: Any, early_stopping: keras.callbacks.EarlyStopping | None) -> None:
        """The callbacks whose state the checkpoint keeps."""
        self.best, self.early_stopping = best, early_stopping

    def restore(self, model: keras.Model, *, run_id: str = "") -> Start:
        """Load the checkpoint into `model`, its optimizer and the watched callbacks; Start() if there is none."""
        if not self.exists():
            return self.start
        with np.load(self.path) as state:
            meta = json.loads(str(state["meta"]))
            arrays = {name: state[name] for name in state.files if name != "meta"}
        self._refuse_other_config(meta["fingerprint"], run_id=run_id)
        model.optimizer.build(model.trainable_variables)
        for prefix, variables in (("model", model.variables), ("optimizer", model.optimizer.variables)):
            values = [arrays[f"{prefix}{index}"] for index in range(meta[f"{prefix}_count"])]
            shapes = [tuple(variable.shape) for variable in variables]
            if [value.shape for value in values] != shapes:
                raise ConfigError(
                    f"{self.path}: the checkpoint's {prefix} variables do not fit this model; start a new run."
                )
            for variable, value in zip(variables, values, strict=True):
                variable.assign(value)
        if self.best is not None and meta["best_epoch"]:
            self.best.best_loss, self.best.best_epoch = meta["best_loss"], meta["best_epoch"]
            self.best.weights = [arrays[f"best{index}"] for index in range(meta["best_count"])]
        self._early_stopping_state = meta["early_stopping"]
        self.start = Start(meta["epoch"], meta["history"], meta["stopped"], meta["fit_seconds"])
        self._history = {name: list(values) for name, values in meta["history"].items()}
        return self.start

    def _refuse_other_config(self, saved: Mapping[str, str], *, run_id: str) -> None:
        changed = [
            f"{key} {saved.get(key, '(unset)')} -> {self.fingerprint.get(key, '(unset)')}"
            for key in sorted(set(saved) | set(self.fingerprint))
            if saved.get(key) != self.fingerprint.get(key)
        ]
        if changed:
            raise ConfigError(
                f"run {run_id or self.folder.name}: its checkpoint was made under another config ({', '.join(changed)}); "
                "resume with the flags and data it was trained with, or train a new run without --resume."
            )

    def on_train_begin(self, logs: dict | None = None) -> None:
        # EarlyStopping resets itself in its own on_train_begin, which runs before this one.
        if self.early_stopping is not None and self._early_stopping_state:
            for name, value in self._early_stopping_state.items():
                setattr(self.early_stopping, name, value)
        self._fit_started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for name, value in (logs or {}).items():
            self._history.setdefault(name, []).append(float(value))
        self.save(epoch + 1)
        due = self.upload_every > 0 and (epoch + 1) % self.upload_every == 0
        if self.upload is not None and (due or self.model.stop_training):
            self.upload(self.path)

    def save(self, epoch: int) -> None:
        """Write the state after `epoch` epochs to a temporary file and rename it over the last one."""
        model, best = self.model, self.best
        stopping = self.early_stopping
        meta = {
            "epoch": epoch, "history": self._history, "stopped": bool(model.stop_training),
            "fingerprint": self.fingerprint, "fit_seconds": self.start.fit_seconds + time.perf_counter() - self._fit_started,
            "best_loss": float(best.best_loss) if best is not None and best.best_epoch else None,
            "best_epoch": int(best.best_epoch) if best is not None else 0,
            "early_stopping": {
                "wait": int(stopping.wait), "best": None if stopping.best is None else float(stopping.best),
                "best_epoch": int(stopping.best_epoch), "stopped_epoch": int(stopping.stopped_epoch),
            } if stopping is not None else None,
        }  # fmt: skip
        arrays: dict[str, np.ndarray] = {}
        for prefix, values in (
            ("model", [np.array(variable) for variable in model.variables]),
            ("optimizer", [np.array(variable) for variable in model.optimizer.variables]),
            ("best", list(best.weights) if best is not None and best.weights is not None else []),
        ):
            meta[f"{prefix}_count"] = len(values)
            arrays |= {f"{prefix}{index}": value for index, value in enumerate(values)}
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial.npz")
        with open(partial, "wb") as handle:
            np.savez(handle, meta=np.array(json.dumps(meta)), **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, self.path)

    def remove(self) -> None:
        """Drop the local checkpoint of a run that has finished."""
        shutil.rmtree(self.folder, ignore_errors=True)
