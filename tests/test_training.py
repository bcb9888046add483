"""fit: it learns a tiny task, keeps the best-val_loss weights, logs the learning rate, and reproduces."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from mammo.data.store import PreparedDataset
from mammo.model.variants import make_config
from mammo.train.training import fit
from tests.test_pipeline import make_speck_dataset

EPOCHS = 5


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    return make_speck_dataset(tmp_path_factory.mktemp("specks") / "prepared", train_patients=40, test_patients=8)


def tiny_config(**overrides):
    """model5's recipe (RMSprop + decay, L2, dropout, augmentation) on a net small enough for 32×32."""
    values = {"filters": "8-16", "dense_units": 16, "image_size": 32, "batch_size": 8, "epochs": EPOCHS,
              "patience": 0, "learning_rate": 3e-3, "augment": 0, "seed": 1}  # fmt: skip
    return make_config("model5", precision="float32", **(values | overrides))


class Recorder(keras.callbacks.Callback):
    """A caller's callback (as the Optuna pruner is) sees every epoch's logs."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[int] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epochs.append(epoch)


@pytest.mark.slow
def test_fit_learns_keeps_the_best_weights_and_reports_the_schedule(dataset: PreparedDataset) -> None:
    recorder = Recorder()
    result = fit(tiny_config(), dataset, callbacks=[recorder], verbose=0)
    history = result.history
    assert recorder.epochs == list(range(EPOCHS)) and result.epochs_run == EPOCHS
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "val_auc", "learning_rate"} <= set(history)
    assert result.best_epoch == int(np.argmin(history["val_loss"])) + 1
    assert result.val_accuracy == history["val_accuracy"][result.best_epoch - 1]
    # RMSprop with InverseTimeDecay(3e-3, 1, 1e-3): the rate after epoch e is 3e-3 / (1 + 1e-3 · steps so far).
    steps = int(np.ceil(len(result.splits.train_indices) / 8))
    expected = [3e-3 / (1 + 1e-3 * steps * epoch) for epoch in range(1, EPOCHS + 1)]
    np.testing.assert_allclose(history["learning_rate"], expected, rtol=1e-5)
    # The model holds the best epoch's weights: its validation loss is that epoch's.
    val_loss = result.model.evaluate(result.splits.val, verbose=0, return_dict=True)["loss"]
    assert val_loss == pytest.approx(min(history["val_loss"]), rel=1e-4)
    labels = dataset.labels[result.splits.test_indices]
    assert result.probabilities.shape == result.end_probabilities.shape == labels.shape
    assert np.all((result.probabilities >= 0) & (result.probabilities <= 1))
    assert np.mean((result.probabilities > 0.5) == labels) >= 0.8  # specks vs blobs is learnt in a few epochs
    assert result.precision == "float32"


@pytest.mark.slow
def test_the_same_seed_reproduces_the_run_and_another_seed_does_not(dataset: PreparedDataset) -> None:
    config = tiny_config(epochs=2, augment=0.5)
    first, again = fit(config, dataset, verbose=0), fit(config, dataset, verbose=0)
    assert first.history == again.history
    assert np.array_equal(first.probabilities, again.probabilities)
    other = fit(tiny_config(epochs=2, augment=0.5, seed=2), dataset, verbose=0)
    assert other.history["loss"] != first.history["loss"]


@pytest.mark.slow
def test_early_stopping_waits_patience_epochs_after_the_best_one(tmp_path: Path) -> None:
    # A learning rate far below float32 resolution leaves the weights, hence val_loss, unchanged:
    # epoch 1 stays the best, and patience 2 stops training after epoch 3.
    dataset = make_speck_dataset(tmp_path / "p", train_patients=8, test_patients=2)
    result = fit(tiny_config(epochs=6, patience=2, learning_rate=1e-12, lr_decay=0), dataset, verbose=0)
    assert (result.epochs_run, result.best_epoch) == (3, 1)
    assert np.array_equal(result.probabilities, result.end_probabilities)
