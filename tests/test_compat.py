"""Every private API mammo uses still behaves as mammo.core.compat expects, and none is used anywhere else.

A failure here means a pinned library changed under us: the message names the library, the
installed and pinned versions, and the compat function to rewrite against its changelog.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import sys
from importlib import metadata

import keras
import numpy as np
import optuna
import pytest
from mlflow.exceptions import MlflowException
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import TrialState

from mammo.core import compat
from tests.conftest import REPO_ROOT

PRIVATE_NAMES = {"_storage", "_trial_id", "_heartbeat", "_transform_images", "_actions",
                 "_validate_model_alias_name", "_validate_model_alias_name_reserved"}  # fmt: skip


def upgrade(distribution: str, what: str) -> str:
    pinned = re.search(rf'"{distribution}==([^"]+)"', (REPO_ROOT / "pyproject.toml").read_text())
    return (
        f"{distribution} {metadata.version(distribution)} (pyproject pins {pinned.group(1) if pinned else '?'}) "
        f"changed {what}: rewrite mammo/core/compat.py against that upgrade's changelog."
    )


def _names(path) -> set[str]:
    """Attribute, imported, module-path and defined-function names in one file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.ImportFrom):
            names |= {alias.name for alias in node.names} | set((node.module or "").split("."))
        elif isinstance(node, ast.FunctionDef):
            names.add(node.name)
    return names


def test_the_private_names_are_used_only_behind_the_door() -> None:
    files = [*(REPO_ROOT / "mammo").rglob("*.py"), *(REPO_ROOT / "entrypoints").glob("*.py")]
    users = {str(path.relative_to(REPO_ROOT)): sorted(_names(path) & PRIVATE_NAMES) for path in files
             if path != REPO_ROOT / "mammo" / "core" / "compat.py" and _names(path) & PRIVATE_NAMES}  # fmt: skip
    assert users == {}, f"private library APIs outside mammo/core/compat.py: {users}"


def test_optuna_study_storage_and_trial_id_reach_the_stored_trial(tmp_path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db")
    trial = study.ask()
    try:
        storage, stored_id = compat.study_storage(study), compat.trial_id(trial)
    except AttributeError as error:
        pytest.fail(upgrade("optuna", f"Study._storage or Trial._trial_id ({error})"))
    assert isinstance(storage, BaseStorage), upgrade("optuna", "what Study._storage holds")
    frozen = study.get_trials(deepcopy=False)[0]
    assert compat.trial_id(frozen) == stored_id, upgrade("optuna", "FrozenTrial._trial_id")
    assert storage.get_trial(stored_id).number == trial.number, upgrade("optuna", "BaseStorage.get_trial(trial id)")
    assert storage.set_trial_state_values(stored_id, state=TrialState.FAIL), upgrade("optuna", "set_trial_state_values")
    assert study.get_trials()[0].state == TrialState.FAIL, upgrade("optuna", "a state set through Study._storage")


def test_optuna_heartbeat_check_tells_heartbeat_storages_apart(tmp_path) -> None:
    try:
        with_beat = optuna.create_study(storage=RDBStorage(f"sqlite:///{tmp_path}/a.db", heartbeat_interval=60))
        without = optuna.create_study(storage=RDBStorage(f"sqlite:///{tmp_path}/b.db"))
        answers = [compat.heartbeat_enabled(s) for s in (with_beat, without, optuna.create_study())]
    except (ImportError, AttributeError) as error:
        pytest.fail(upgrade("optuna", f"optuna.storages._heartbeat.is_heartbeat_enabled ({error})"))
    assert answers == [True, False, False], upgrade("optuna", "is_heartbeat_enabled's answer")


def test_keras_random_shear_hands_each_batch_to_the_hook() -> None:
    expected = ["self", "images", "transformation", "interpolation"]
    signature = list(inspect.signature(keras.layers.RandomShear._transform_images).parameters)
    assert signature == expected, upgrade("keras", f"RandomShear._transform_images's arguments to {signature}")

    class Blank(compat.ShearImagesHook, keras.layers.RandomShear):
        calls = 0

        def shear_images(self, images, transformation, interpolation):
            Blank.calls += 1
            assert transformation is not None and interpolation == "bilinear"
            return images * 0.0

    images = np.ones((2, 8, 8, 1), np.float32)
    sheared = np.asarray(Blank(x_factor=0.2, seed=1)(images, training=True))
    assert Blank.calls >= 1 and not sheared.any(), upgrade("keras", "whether RandomShear calls _transform_images")
    assert np.array_equal(np.asarray(Blank(x_factor=0.2, seed=1)(images, training=False)), images)


def test_mlflow_alias_checks_refuse_what_the_registry_refuses() -> None:
    for good in ("champion", "previous-champion", "staging_2"):
        compat.check_alias_name(good)
    for bad in ("latest", "v3", "has space", "a/b"):
        try:
            compat.check_alias_name(bad)
        except MlflowException:
            continue
        except ImportError as error:
            pytest.fail(upgrade("mlflow", f"mlflow.utils.validation's alias checks ({error})"))
        pytest.fail(upgrade("mlflow", f"the alias rules: {bad!r} is now accepted"))


def test_argparse_actions_list_every_option_with_its_type_and_default() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default="3")
    actions = {action.dest: action for action in compat.parser_actions(parser)}
    python = f"Python {sys.version.split()[0]}"
    assert set(actions) == {"help", "epochs"}, f"{python} changed ArgumentParser._actions: rewrite mammo/core/compat.py"
    assert actions["epochs"].option_strings == ["--epochs"] and actions["epochs"].type is int, python
    assert actions["epochs"].default == "3", f"{python} changed an Action's default: rewrite mammo/core/compat.py"


def test_keras_get_file_calls_are_recorded_as_the_applications_make_them(tmp_path) -> None:
    import inspect

    from keras.src.applications import mobilenet_v3
    from keras.src.utils import file_utils

    assert "file_utils.get_file(" in inspect.getsource(mobilenet_v3), upgrade("keras", "how applications fetch weights")
    source = tmp_path / "weights.h5"
    source.write_bytes(b"not really weights")
    with compat.recorded_downloads() as calls:
        path = file_utils.get_file("weights.h5", source.as_uri(), cache_dir=str(tmp_path / "cache"))
    assert calls == [{"file": "weights.h5", "url": source.as_uri(), "path": str(path)}], upgrade("keras", "get_file")
    assert file_utils.get_file is not None and "recording" not in file_utils.get_file.__name__  # put back
