"""A training stopped after any epoch and resumed ends as the uninterrupted one would (mammo.train.resume).

Float32 on one CPU: the same kept weights to the bit, the same per-epoch metrics, one point per
epoch in the run, the params unchanged; a finished run or another config is refused in one line.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from mlflow import MlflowClient

from mammo import tracking
from mammo.core.errors import ConfigError
from mammo.data.store import PreparedDataset
from mammo.model.variants import make_config
from mammo.train.resume import STATE_FILE, EpochCheckpoint, weights_digest
from mammo.train.training import fit
from tests.test_pipeline import make_speck_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 6
# Dropout, augmentation, early stopping and the decaying learning rate all carry state across epochs.
FLAGS = {"filters": "8-16", "dense_units": "8", "dropout": "0.3", "image_size": "32", "batch_size": "8",
         "augment": "0.5", "seed": "5", "patience": "3"}  # fmt: skip


@pytest.fixture(scope="module")
def dataset40(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    return make_speck_dataset(tmp_path_factory.mktemp("d40") / "prepared", size=40, train_patients=16, test_patients=5)


class StopAfter(keras.callbacks.Callback):
    """Raises at the end of epoch `epochs`, after the checkpoint was written: a crash between two epochs."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch + 1 == self.epochs:
            raise RuntimeError("stopped")


@pytest.mark.slow
def test_a_fit_stopped_after_an_epoch_and_resumed_is_the_uninterrupted_fit(
    dataset40: PreparedDataset, tmp_path: Path
) -> None:
    config = make_config("model5", precision="float32", epochs=EPOCHS, **FLAGS)
    whole = fit(config, dataset40, verbose=0)
    checkpoint = EpochCheckpoint(tmp_path / "run", fingerprint=config.params())
    with pytest.raises(RuntimeError, match="stopped"):
        fit(config, dataset40, verbose=0, checkpoint=checkpoint, callbacks=[StopAfter(2)])
    resumed_checkpoint = EpochCheckpoint(tmp_path / "run", fingerprint=config.params())
    resumed = fit(config, dataset40, verbose=0, checkpoint=resumed_checkpoint)

    assert resumed_checkpoint.start.epoch == 2
    assert resumed.history == whole.history and resumed.epochs_run == whole.epochs_run
    assert resumed.best_epoch == whole.best_epoch
    assert weights_digest(resumed.model.get_weights()) == weights_digest(whole.model.get_weights())
    assert np.array_equal(resumed.end_probabilities, whole.end_probabilities)

    # Killed after the last epoch's checkpoint, while reporting: the resume fits nothing and gives the same.
    done = tmp_path / "done"
    with pytest.raises(RuntimeError, match="stopped"):
        fit(config, dataset40, verbose=0, checkpoint=EpochCheckpoint(done, fingerprint=config.params()),
            callbacks=[StopAfter(whole.epochs_run)])  # fmt: skip
    reported = fit(config, dataset40, verbose=0, checkpoint=EpochCheckpoint(done, fingerprint=config.params()))
    assert reported.history == whole.history and reported.best_epoch == whole.best_epoch
    assert weights_digest(reported.model.get_weights()) == weights_digest(whole.model.get_weights())

    other = make_config("model5", precision="float32", epochs=EPOCHS, **(FLAGS | {"seed": "6"}))
    with pytest.raises(ConfigError, match=r"another config \(seed 5 -> 6\)"):
        fit(other, dataset40, verbose=0, checkpoint=EpochCheckpoint(tmp_path / "run", fingerprint=other.params()))


def _train(data: Path, cwd: Path, *extra: str) -> subprocess.Popen:
    argv = ["--data", str(data), "--epochs", str(EPOCHS), "--precision", "float32"]
    argv += [item for name, value in FLAGS.items() for item in (f"--{name.replace('_', '-')}", value)]
    argv += extra  # last, so an extra flag wins over FLAGS
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/mlflow.db"}
    return subprocess.Popen(
        [sys.executable, "-m", "entrypoints.train", *argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip


def _finish(process: subprocess.Popen, *, timeout: float = 240) -> tuple[int, str]:
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def _checkpointed_epoch(cwd: Path) -> tuple[str, int] | None:
    for path in (cwd / "checkpoints").glob(f"*/{STATE_FILE}"):
        try:
            with np.load(path) as state:
                return path.parent.name, json.loads(str(state["meta"]))["epoch"]
        except (OSError, ValueError, KeyError):  # between a rename and the next read
            return None
    return None


@pytest.mark.slow
def test_train_killed_at_a_random_epoch_then_resumed_ends_as_an_uninterrupted_run(
    dataset40: PreparedDataset, tmp_path: Path
) -> None:
    code, output = _finish(_train(dataset40.path, tmp_path))
    assert code == 0, output
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (whole,) = client.search_runs([client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id])

    kill_after = random.Random().randint(1, EPOCHS - 2)  # the process dies during a later epoch
    process = _train(dataset40.path, tmp_path)
    deadline = time.monotonic() + 240
    while (seen := _checkpointed_epoch(tmp_path)) is None or seen[1] < kill_after:
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    run_id, killed_at = _checkpointed_epoch(tmp_path)
    assert killed_at < EPOCHS and client.get_run(run_id).info.status == "RUNNING", (kill_after, killed_at)

    code, output = _finish(_train(dataset40.path, tmp_path, "--resume", run_id, "--seed", "6"))
    assert code == 2 and f"run {run_id}: its checkpoint was made under another config (seed 5 -> 6)" in output
    code, output = _finish(_train(dataset40.path, tmp_path, "--resume", run_id))
    assert code == 0, output
    resumed = client.get_run(run_id)
    assert resumed.info.status == "FINISHED"
    assert resumed.data.params == whole.data.params
    for name in tracking.EPOCH_METRICS:  # one point per epoch, the values of the uninterrupted run
        points = {(m.step, m.value) for m in client.get_metric_history(run_id, name)}
        expected = {(m.step, m.value) for m in client.get_metric_history(whole.info.run_id, name)}
        assert len(points) == len(client.get_metric_history(run_id, name)) and points == expected, name
    assert resumed.data.metrics["best_epoch"] == whole.data.metrics["best_epoch"]
    assert resumed.data.tags[tracking.KEPT_WEIGHTS_TAG] == whole.data.tags[tracking.KEPT_WEIGHTS_TAG]
    assert resumed.data.metrics["test_accuracy"] == whole.data.metrics["test_accuracy"]
    assert not (tmp_path / "checkpoints" / run_id).exists()  # a finished run keeps no local checkpoint

    code, output = _finish(_train(dataset40.path, tmp_path, "--resume", run_id))
    assert code == 2 and f"train: error: run {run_id} is FINISHED: there is nothing to resume" in output
    print(f"killed after epoch {killed_at} of {EPOCHS} (asked {kill_after}); resumed run {run_id} FINISHED")


@pytest.mark.slow
def test_a_run_resumed_from_its_uploaded_checkpoint_logs_every_epoch_once(
    dataset40: PreparedDataset, tmp_path: Path
) -> None:
    """Another machine (no local copy) fetches the checkpoint uploaded every 2 epochs and redoes epoch 3."""
    from mammo.train.training import train_run

    config = make_config("model5", precision="float32", epochs=4, **(FLAGS | {"patience": "0"}))
    with pytest.raises(RuntimeError, match="stopped"):
        train_run(config, dataset40, callbacks=[StopAfter(3)], checkpoint_every=2, log_model=False, verbose=0)
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id])
    assert run.info.status == "FAILED" and sorted(
        m.step for m in client.get_metric_history(run.info.run_id, "loss")
    ) == [1, 2, 3]
    shutil.rmtree(tmp_path / "checkpoints")  # this machine has no copy: the artifact's (epoch 2) is fetched

    run_id, result, _ = train_run(config, dataset40, resume_run_id=run.info.run_id, log_model=False, verbose=0)
    assert run_id == run.info.run_id and client.get_run(run_id).info.status == "FINISHED"
    for name in tracking.EPOCH_METRICS:
        history = client.get_metric_history(run_id, name)
        assert sorted(m.step for m in history) == [1, 2, 3, 4], name
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(result.history[name], rel=1e-6)
