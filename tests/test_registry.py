"""Registry promotion on a real SQLite tracking store: aliases, tags, decisions, the statistical gate.

The models are tiny Keras nets with hand-set weights (mean brightness → sigmoid) on a tiny
prepared dataset whose calcifications are brighter than its masses, so each model's test
accuracy is known exactly and every gate decision is deterministic; they are logged exactly as
training logs its models (`serving.log_model`), one run each, with the params promote reads.
"""

from __future__ import annotations

from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from entrypoints import promote as promote_entry
from mammo import tracking
from mammo.core.errors import ConfigError, DataError
from mammo.data.prepare import data_home
from mammo.data.store import MANIFEST_COLUMNS, PreparedDataset, write_prepared
from mammo.registry import candidates, gate, lineage, promotion
from mammo.serve import serving
from tests.conftest import REPO_ROOT

SIZE = 32
MASS_MEAN = 0.2
# Test calcifications from faint to bright: a threshold at 0.65 misses the four below it.
CALC_MEANS = (0.45, 0.5, 0.55, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.9, 0.8)


def make_dataset(root: Path, *, test_mass: int = 12) -> PreparedDataset:
    """Train 20 + test 24 patches: masses dark (mean 0.2), calcifications bright (CALC_MEANS)."""
    rng = np.random.default_rng(0)
    means = [MASS_MEAN, 0.9] * 10 + [MASS_MEAN] * test_mass + list(CALC_MEANS)
    labels = [0, 1] * 10 + [0] * test_mass + [1] * len(CALC_MEANS)
    splits = ["train"] * 20 + ["test"] * (test_mass + len(CALC_MEANS))
    noise = rng.normal(0, 0.02, (len(means), SIZE, SIZE))
    patches = np.clip((np.array(means)[:, None, None] + noise) * 65535, 0, 65535).astype(np.uint16)
    manifest = pd.DataFrame({
        "index": range(len(means)), "patient_id": [f"P_{i:05d}" for i in range(len(means))],
        "case_id": [f"case{i}" for i in range(len(means))], "side": "LEFT", "view": "CC", "abnormality_id": 1,
        "label": labels, "abnormality_type": ["mass" if y == 0 else "calcification" for y in labels],
        "pathology": "BENIGN", "breast_density": 2, "subtlety": 3, "split": splits,
        "source_file": [f"f{i}.dcm" for i in range(len(means))],
    })[MANIFEST_COLUMNS]  # fmt: skip
    return write_prepared(root, patches=patches, manifest=manifest, source="synthetic", options={"image_size": SIZE})


def threshold_model(threshold: float, *, inverted: bool = False) -> keras.Model:
    """P(calc) = sigmoid(±40 (mean brightness − threshold)): Input → Conv2D → GAP → Dense(1, sigmoid)."""
    inputs = keras.Input((SIZE, SIZE, 1))
    features = keras.layers.Conv2D(1, 1, use_bias=False, name="identity")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="threshold")(pooled)
    model = keras.Model(inputs, outputs)
    slope = -40.0 if inverted else 40.0
    model.get_layer("identity").set_weights([np.ones((1, 1, 1, 1), np.float32)])
    model.get_layer("threshold").set_weights(
        [np.array([[slope]], np.float32), np.array([-slope * threshold], np.float32)]
    )
    return model


def log_training_run(
    dataset: PreparedDataset, model: keras.Model | None, *, val_auc: float, variant: str = "model5",
    status: str = "FINISHED",
) -> str:  # fmt: skip
    """One run as train logs it: params, val/test metrics, the dataset input and the pyfunc model."""
    with tracking.start_run(run_name=variant) as run:
        tracking.log_params({"variant": variant, "data_digest": dataset.digest, "data_source": dataset.source,
                             "image_size": SIZE})  # fmt: skip
        tracking.log_metrics({"kept_val_auc": val_auc, "test_accuracy": 0.5})
        tracking.log_prepared_input(dataset)
        if model is not None:
            serving.log_model(model, image_size=SIZE, input_example=np.asarray(dataset.patches[:2]))
        run_id = run.info.run_id
    if status != "FINISHED":
        MlflowClient().set_terminated(run_id, status=status)
    return run_id


def _aliases() -> dict[str, str]:
    return {
        alias: str(version)
        for alias, version in MlflowClient().get_registered_model(tracking.MODEL_NAME).aliases.items()
    }


def _version(version: str) -> mlflow.entities.model_registry.ModelVersion:
    return MlflowClient().get_model_version(tracking.MODEL_NAME, version)


@pytest.mark.slow
def test_first_promotion_then_a_better_one_then_a_significantly_worse_one(tmp_path: Path, capsys) -> None:
    dataset = make_dataset(tmp_path / "prepared")
    with pytest.raises(ConfigError, match=r"no finished run .* logged a model and the metric 'kept_val_auc'"):
        candidates.find_candidate(experiment_id=tracking.use_experiment())
    with pytest.raises(ConfigError, match="experiment 'elsewhere' does not exist"):
        promotion.promote(experiment="elsewhere")
    # Never candidates: a better val_auc but no model, and a model whose run failed.
    no_model = log_training_run(dataset, None, val_auc=0.99)
    log_training_run(dataset, threshold_model(0.3), val_auc=0.999, status="FAILED")
    assert promote_entry.main(["--run-id", no_model]) == 2
    assert "logged no model named 'model'" in capsys.readouterr().err

    fair = log_training_run(dataset, threshold_model(0.65), val_auc=0.70, variant="model3")  # test accuracy 20/24
    assert promote_entry.main([]) == 0  # no champion yet: promoted whatever its score
    assert "PROMOTED" in capsys.readouterr().out
    assert _aliases() == {"champion": "1", "challenger": "1"}
    first = _version("1")
    assert first.tags["validation_status"] == "promoted" and first.tags["run_id"] == fair
    assert first.tags["variant"] == "model3" and first.tags["data_digest"] == dataset.digest
    assert first.tags["kept_val_auc"] == "0.7" and float(first.tags["gate_candidate_score"]) == pytest.approx(20 / 24)
    assert "no champion yet" in first.description

    good = log_training_run(dataset, threshold_model(0.3), val_auc=0.80, variant="model5")  # 24/24
    result = promotion.promote()
    assert (result.run_id, result.version, result.decision.promoted) == (good, "2", True)
    assert _aliases() == {"champion": "2", "challenger": "2", "previous-champion": "1"}
    second = _version("2").tags
    assert float(second["gate_champion_score"]) == pytest.approx(20 / 24) and second["gate_champion_version"] == "1"
    assert second["mcnemar_candidate_only_right"] == "4" and second["mcnemar_champion_only_right"] == "0"

    # Best on validation, all wrong on test: registered as challenger, rejected, champion untouched.
    wrong = log_training_run(dataset, threshold_model(0.3, inverted=True), val_auc=0.95, variant="model4")
    assert promote_entry.main(["--min-delta", "", "--alpha", "0.01", "--data", str(dataset.path)]) == 0
    printed = capsys.readouterr().out
    assert "REJECTED" in printed and "significantly worse" in printed and "champion stays at version 2" in printed
    assert _aliases() == {"champion": "2", "challenger": "3", "previous-champion": "1"}
    third = _version("3")
    assert third.run_id == wrong and third.tags["validation_status"] == "rejected"
    assert float(third.tags["mcnemar_p"]) < 1e-6 and third.tags["mcnemar_champion_only_right"] == "24"
    assert float(third.tags["gate_candidate_score"]) == 0.0 and float(third.tags["gate_champion_score"]) == 1.0
    card = third.description
    # the model card: decision, data, model, test figures, links to the run's plots
    assert card.startswith("# mammo-cnn version 3: REJECTED as `champion`") and "McNemar p = 1.19e-07" in card
    assert (
        f"digest `{dataset.digest}`" in card
        and "variant **model4**" in card
        and "test: 12 mass, 12 calcification" in card
    )
    assert f"#/experiments/{mlflow.get_run(wrong).info.experiment_id}/runs/{wrong}/artifacts/plots/roc.png" in card
    assert "| 50.0 % (95 % CI –) |" in card  # the run's own logged test accuracy (this hand-made run logged no CI)
    promote_runs = mlflow.search_runs(filter_string="tags.`mammo.entry` = 'promote'", search_all_experiments=True)
    assert sorted(promote_runs["tags.validation_status"]) == ["promoted", "rejected"]

    # The champion's own run again: nothing new is registered. An equally good twin: a tie keeps the champion.
    again = promotion.promote(run_id=good)
    assert not again.registered and "already the champion" in again.decision.reason
    twin = log_training_run(dataset, threshold_model(0.3), val_auc=0.8)
    tie = promotion.promote(run_id=twin, gate_metric="test_loss")
    assert not tie.decision.promoted and "not better" in tie.decision.reason and tie.decision.p_value == 1.0
    assert _aliases() == {"champion": "2", "challenger": "4", "previous-champion": "1"}


def test_gate_rules_lower_is_better_min_delta_and_bad_options() -> None:
    labels = np.array([0] * 10 + [1] * 10)
    truth = labels * 0.9 + 0.05
    sharper = labels * 0.98 + 0.01
    decision = gate.gate_decision(
        labels=labels, candidate_probabilities=sharper, champion_probabilities=truth, gate_metric="test_loss"
    )
    assert decision.promoted and decision.p_value == 1.0 and decision.candidate_score < decision.champion_score
    small = gate.gate_decision(
        labels=labels, candidate_probabilities=sharper, champion_probabilities=truth, gate_metric="test_loss",
        min_delta=0.5,
    )  # fmt: skip
    assert not small.promoted and "min_delta" in small.reason
    with pytest.raises(ConfigError, match="--gate-metric must be one of"):
        gate.gate_decision(labels=labels, candidate_probabilities=truth, champion_probabilities=None, gate_metric="auc")
    with pytest.raises(ConfigError, match="is a test metric; pick the candidate on validation"):
        candidates.find_candidate(experiment_id="0", select_metric="test_accuracy")
    with pytest.raises(ConfigError, match="--alpha"):
        gate.check_gate_options(gate_metric="test_accuracy", min_delta=0.0, alpha=1.5)
    with pytest.raises(ConfigError, match="undefined on these test patches"):
        gate.gate_decision(labels=np.zeros(4), candidate_probabilities=np.zeros(4), champion_probabilities=None,
                               gate_metric="test_auc")  # fmt: skip


def test_prepared_data_is_found_by_digest_or_reported_missing(tmp_path: Path, monkeypatch) -> None:
    dataset = make_dataset(tmp_path / "data" / "prepared" / "synthetic")
    assert lineage.find_prepared(dataset.digest) == tmp_path / "data" / "prepared" / "synthetic"  # the data home's
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the data home is absolute: found from any working directory
    assert lineage.find_prepared(dataset.digest) == tmp_path / "data" / "prepared" / "synthetic"
    with pytest.raises(DataError, match=r"no prepared dataset with digest 0000 found .*Pass --data"):
        lineage.find_prepared("0000")
    monkeypatch.delenv("MAMMO_DATA_HOME")  # unset: the checkout's data/, absolute, wherever the process started
    assert data_home() == REPO_ROOT / "data" and data_home().is_absolute()
