"""The private APIs of our pinned libraries, behind one door.

Each of these has no public equivalent in the pinned version, so mammo reaches inside the library
here and nowhere else; tests/test_compat.py checks every one against the installed library and
names the upgrade to check when one changes. The libraries are imported inside the functions, so
that an entry point's `--help` loads none of them.

    Optuna 5.0    study._storage, trial._trial_id, optuna.storages._heartbeat.is_heartbeat_enabled
    Keras 3.15    RandomShear._transform_images (the per-batch image transform a subclass replaces)
    MLflow 3.17   mlflow.utils.validation._validate_model_alias_name(_reserved)
    argparse      ArgumentParser._actions (every declared option, with its type and default)
"""

from __future__ import annotations

import argparse
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
