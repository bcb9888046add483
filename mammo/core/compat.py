"""The private APIs of our pinned libraries, behind one door.

Each of these has no public equivalent in the pinned version, so mammo reaches inside the library
here and nowhere else; tests/test_compat.py checks every one against the installed library and
names the upgrade to check when one changes. The libraries are imported inside the functions, so
that an entry point's `--help` loads none of them.

    Optuna 5.0    study._storage, trial._trial_id, optuna.storages._heartbeat.is_heartbeat_enabled
    Keras 3.15    RandomShear._transform_images (the per-batch image transform a subclass replaces)
    MLflow 3.17   mlflow.utils.validation._validate_model_alias_name(_reserved)
    argparse      ArgumentParser._actions (every declared option, with its type and default)
    Keras 3.15    keras.src.utils.file_utils.get_file (what keras.applications download, recorded)
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any


def study_storage(study: Any) -> Any:  # optuna.Study → optuna.storages.BaseStorage
    """The storage behind a study: Optuna keeps it private, and a trial's state is set through it."""
    return study._storage


def trial_id(trial: Any) -> int:  # optuna.Trial or FrozenTrial → the storage's trial id
    """The storage's id of a trial (unique across studies), which `study_storage(study)` methods take."""
    return trial._trial_id


def heartbeat_enabled(study: Any) -> bool:
    """Whether the study's storage records heartbeats (an RDB storage given `heartbeat_interval`)."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(study_storage(study))


def check_alias_name(name: str) -> None:
    """MLflow's own check of a model alias name; raises MlflowException for one the registry refuses."""
    from mlflow.utils.validation import _validate_model_alias_name, _validate_model_alias_name_reserved

    _validate_model_alias_name(name)
    _validate_model_alias_name_reserved(name)


def parser_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every action (option) declared on `parser`, help included, in declaration order."""
    return list(parser._actions)


class ShearImagesHook:
    """Mix in before `keras.layers.RandomShear`: Keras' per-batch image transform goes to `shear_images`.

    `RandomShear.transform_images` hands each batch to the private `_transform_images(images,
    transformation, interpolation)`; a subclass that defines `shear_images` with those arguments
    replaces the shear itself and keeps Keras' random draws, seeds and tf.data support.
    """

    def shear_images(self, images: Any, transformation: Any, interpolation: str) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define shear_images")

    def _transform_images(self, images: Any, transformation: Any, interpolation: str) -> Any:
        return self.shear_images(images, transformation, interpolation)


@contextlib.contextmanager
def recorded_downloads() -> Iterator[list[dict[str, str]]]:
    """Every weights file a keras.applications builder asks Keras's `get_file` for: name, URL, local path.

    The applications keep their file names and URLs in module constants and call
    `keras.src.utils.file_utils.get_file` (a private module, looked up at call time), so recording
    that call is the one way to name the exact file that was loaded (for its hash) or that could
    not be fetched (for the offline message).
    """
    from keras.src.utils import file_utils

    original = file_utils.get_file
    calls: list[dict[str, str]] = []

    def recording(fname=None, origin=None, *args, **kwargs):  # get_file's own signature
        call = {"file": str(fname or str(origin).rsplit("/", 1)[-1]), "url": str(origin), "path": ""}
        calls.append(call)
        call["path"] = str(original(fname, origin, *args, **kwargs))
        return call["path"]

    file_utils.get_file = recording
    try:
        yield calls
    finally:
        file_utils.get_file = original
