"""Promotion a team can trust, on a real SQLite registry: the kept checkpoint ranks, versions are reused,
aliases are checked and move safely, and concurrent promotions (two real processes) are serialised.

The models are the hand-set threshold nets of tests/test_registry.py, so every gate decision is known.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from entrypoints import promote as promote_entry
from mammo import tracking
from mammo.core.errors import ConfigError, RegistryError
from mammo.data.store import PreparedDataset, write_prepared
from mammo.registry import lineage, promotion, versions
from mammo.report import evaluation
from mammo.serve import serving
from tests.conftest import REPO_ROOT
from tests.test_registry import _aliases, _version, log_training_run, make_dataset, threshold_model

MODEL = tracking.MODEL_NAME


def log_curve_run(dataset, threshold: float, *, val_auc: list[float], best_epoch: int) -> str:
    """A run as training logs it: one val_auc point per epoch, the kept epoch's value as kept_val_auc."""
    with tracking.start_run(run_name=f"curve-{threshold}") as run:
        tracking.log_params({"variant": "model5", "data_digest": dataset.digest, "data_source": dataset.source})
        for epoch, value in enumerate(val_auc, start=1):
            tracking.log_metrics({"val_auc": value}, step=epoch)
        tracking.log_metrics({"kept_val_auc": val_auc[best_epoch - 1], "best_epoch": best_epoch})
        tracking.log_prepared_input(dataset)
        serving.log_model(threshold_model(threshold), image_size=32, input_example=np.asarray(dataset.patches[:2]))
        return run.info.run_id


def _registered_models() -> list[str]:
    return sorted(model.name for model in MlflowClient().search_registered_models())


def test_promote_ranks_on_the_kept_checkpoint_not_the_last_epoch(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "prepared")
    # kept epoch 1 (0.95) but fell to 0.60 by the last epoch; the other rose to 0.85 and kept it.
    early = log_curve_run(dataset, 0.65, val_auc=[0.95, 0.60], best_epoch=1)
    late = log_curve_run(dataset, 0.3, val_auc=[0.70, 0.85], best_epoch=2)
    by_last_epoch = mlflow.search_runs(order_by=["metrics.val_auc DESC"], output_format="list")
    assert by_last_epoch[0].info.run_id == late  # what promote used to rank on
    assert promotion.promote().run_id == early
    for run_id in (early, late):
        assert [m.step for m in MlflowClient().get_metric_history(run_id, "val_auc")] == [1, 2]  # one point per epoch
    with pytest.raises(ConfigError, match="--select-metric must be one of"):
        promotion.promote(select_metric="auc")


@pytest.mark.slow
def test_bad_aliases_are_refused_before_anything_is_registered_and_a_registered_run_is_reused(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "prepared")
    good = log_training_run(dataset, threshold_model(0.3), val_auc=0.8)
    for alias, message in [("latest", "reserved"), ("v3", "reserved"), ("challenger", "manages itself"),
                           ("previous-x", "manages itself"), ("bad alias!", "Invalid alias")]:  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            promotion.promote(alias=alias)
    assert _registered_models() == []  # nothing registered by a refused promotion

    assert promotion.promote(run_id=good).decision.promoted
    worse = log_training_run(dataset, threshold_model(0.65), val_auc=0.7)
    first = promotion.promote(run_id=worse)
    again = promotion.promote(run_id=worse)
    assert (first.version, first.registered) == ("2", True) and not first.decision.promoted
    assert (again.version, again.registered) == ("2", False) and not again.decision.promoted  # reused, re-gated
    assert len(MlflowClient().search_model_versions(f"name = '{MODEL}'")) == 2
    assert _aliases() == {"champion": "1", "challenger": "2"}
    assert _registered_models() == [MODEL]  # the promotion lock was released each time
    # An alias the model does not carry yet is "no holder" (MLflow answers it with INVALID_PARAMETER_VALUE).
    staged = promotion.promote(run_id=worse, alias="staging")
    assert staged.decision.promoted and "no champion yet" in staged.decision.reason
    assert _aliases() == {"champion": "1", "challenger": "2", "staging": "2"}


def test_an_unreadable_registry_is_an_error_not_an_empty_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    mlflow.set_tracking_uri("http://127.0.0.1:9")  # nothing listens on the discard port: connection refused
    with pytest.raises(RegistryError, match=r"reading alias 'champion' of 'mammo-cnn' failed.*nothing was promoted"):
        versions.current_version(MODEL, "champion")


@pytest.mark.slow
def test_a_failure_between_the_alias_moves_is_finished_by_the_next_promotion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = make_dataset(tmp_path / "prepared")
    fair = log_training_run(dataset, threshold_model(0.65), val_auc=0.7)
    good = log_training_run(dataset, threshold_model(0.3), val_auc=0.8)
    promotion.promote(run_id=fair)
    real_set_alias = MlflowClient.set_registered_model_alias

    def failing_previous(self, name, alias, version):  # the registry refuses the second move, as a network drop would
        if alias == tracking.ALIAS_PREVIOUS:
            raise MlflowException("connection reset", error_code="INTERNAL_ERROR")
        return real_set_alias(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", failing_previous)
    with pytest.raises(RegistryError, match="next `promote` finishes the move"):
        promotion.promote(run_id=good)
    assert _aliases() == {"champion": "2", "challenger": "2"}  # champion moved first, never the other way round
    assert _version("2").tags[versions.PENDING_PREVIOUS_TAG] == "1"

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", real_set_alias)
    result = promotion.promote(run_id=good)
    assert not result.registered and "already the champion" in result.decision.reason
    assert _aliases() == {"champion": "2", "challenger": "2", "previous-champion": "1"}
    assert versions.PENDING_PREVIOUS_TAG not in _version("2").tags


@pytest.mark.slow
def test_a_stale_lock_is_taken_over_and_a_live_one_makes_promote_wait_then_say_so(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "prepared")
    run_id = log_training_run(dataset, threshold_model(0.3), val_auc=0.8)
    client, lock = MlflowClient(), f"{MODEL}{versions.LOCK_SUFFIX}"
    client.create_registered_model(lock, tags={"holder": "elsewhere:1:dead", "since": f"{time.time():.3f}"})
    with pytest.raises(RegistryError, match="another promotion of 'mammo-cnn' holds the lock"):
        promotion.promote(run_id=run_id, lock_wait_s=1.5)
    assert _registered_models() == [lock]  # waited, gave up, registered nothing, left the live lock alone
    client.set_registered_model_tag(lock, "since", f"{time.time() - versions.LOCK_STALE_S - 60:.3f}")
    assert promotion.promote(run_id=run_id, lock_wait_s=30).decision.promoted  # the dead holder's lock taken over
    assert _registered_models() == [MODEL]


@pytest.mark.slow
def test_two_promote_processes_at_once_end_with_one_champion_and_a_consistent_history(
    tmp_path: Path, tracking_uri: str
) -> None:
    dataset = make_dataset(tmp_path / "prepared")
    fair = log_training_run(dataset, threshold_model(0.65), val_auc=0.7)  # 20/24 on test
    good = log_training_run(dataset, threshold_model(0.3), val_auc=0.8)  # 24/24
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PYTHONPATH": str(REPO_ROOT)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "entrypoints.promote", "--run-id", run_id],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for run_id in (fair, good)
    ]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    versions = {v.run_id: v for v in MlflowClient().search_model_versions(f"name = '{MODEL}'")}
    number = {run_id: str(version.version) for run_id, version in versions.items()}
    assert set(versions) == {fair, good}  # one version each, nothing registered twice
    aliases = _aliases()
    assert aliases["champion"] == number[good]  # whichever ran first, the better model ends as champion
    good_tags, fair_tags = versions[good].tags, versions[fair].tags
    if "gate_champion_version" in good_tags:  # fair went first, then good beat it
        assert good_tags["gate_champion_version"] == number[fair] == aliases["previous-champion"]
        assert fair_tags["validation_status"] == good_tags["validation_status"] == "promoted"
    else:  # good went first, then fair was judged against it and rejected
        assert fair_tags["gate_champion_version"] == number[good] and "previous-champion" not in aliases
        assert fair_tags["validation_status"] == "rejected"
    assert _registered_models() == [MODEL]


HOLD_LOCK = """
import sys, time
from pathlib import Path
from mammo.registry import versions
log, go, stale_s, hold_s = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
with log.open("a") as out:
    out.write(f"ready {sys.argv[5]}\\n")
while not go.exists():
    time.sleep(0.01)
with versions.promotion_lock("mammo-cnn", wait_s=120, stale_s=stale_s, poll_s=0.02) as lock:
    with log.open("a") as out:
        out.write(f"enter {sys.argv[5]} {time.time():.6f}\\n")
    time.sleep(hold_s)  # longer than stale_s: only the lock's refresh keeps the other process out
    lock.confirm()
    with log.open("a") as out:
        out.write(f"exit {sys.argv[5]} {time.time():.6f}\\n")
"""


@pytest.mark.slow
def test_two_processes_waiting_on_a_stale_lock_hold_it_one_after_the_other(tmp_path: Path, tracking_uri: str) -> None:
    stale_s, hold_s = 1.0, 2.5
    client, lock = MlflowClient(), f"{MODEL}{versions.LOCK_SUFFIX}"
    client.search_experiments()  # the store's tables exist before two processes open it
    client.create_registered_model(lock, tags={"holder": "elsewhere:1:dead", "since": f"{time.time() - 60:.3f}"})
    log, go = tmp_path / "lock.log", tmp_path / "go"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PYTHONPATH": str(REPO_ROOT)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(log), str(go), str(stale_s), str(hold_s), name],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in ("a", "b")
    ]
    deadline = time.monotonic() + 120
    while (log.read_text().count("ready") if log.exists() else 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()  # both see the dead holder's lock at the same moment
    outputs = [worker.communicate(timeout=120)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    events = sorted(
        (float(when), kind, name) for kind, name, when in (line.split() for line in log.read_text().splitlines()
                                                            if not line.startswith("ready"))
    )  # fmt: skip
    kinds = [kind for _, kind, _ in events]
    assert kinds == ["enter", "exit", "enter", "exit"], events  # never both inside
    assert events[0][2] == events[1][2] != events[2][2] == events[3][2]
    assert _registered_models() == []  # the dead lock, both holders' locks and any takeover marker: all gone


def test_a_lock_lost_to_another_holder_stops_the_promotion_before_it_writes() -> None:
    client, name = MlflowClient(), f"{MODEL}{versions.LOCK_SUFFIX}"
    lost = r"was lost while this promotion ran \(held by thief\)"
    with pytest.raises(RegistryError, match=lost), versions.promotion_lock(MODEL, stale_s=0.4) as lock:
        client.delete_registered_model(name)
        client.create_registered_model(name, tags={"holder": "thief", "since": f"{time.time():.3f}"})
        time.sleep(0.3)
        lock.confirm()
    assert client.get_registered_model(name).tags["holder"] == "thief"  # not ours: left in place


def log_run_with_threshold(dataset, model, *, threshold: float, val_auc: float) -> str:
    """A training run whose model is served with a decision threshold chosen (as if) on validation."""
    with tracking.start_run(run_name=f"threshold-{threshold}") as run:
        tracking.log_params({"variant": "model5", "data_digest": dataset.digest, "data_source": dataset.source,
                             "image_size": 32})  # fmt: skip
        tracking.log_metrics({"kept_val_auc": val_auc})
        tracking.log_prepared_input(dataset)
        serving.log_model(model, image_size=32, input_example=np.asarray(dataset.patches[:2]), threshold=threshold)
        return run.info.run_id


@pytest.mark.slow
def test_the_gate_judges_the_rule_the_served_model_applies(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "prepared")
    _, patches, labels = lineage.held_out_patches(dataset)
    net = threshold_model(0.62)  # the faint calcifications score 0.06 to 0.31: mass at 0.5, calc at 0.2 for two
    served_rule = log_run_with_threshold(dataset, net, threshold=0.2, val_auc=0.8)
    result = promotion.promote(run_id=served_rule)
    served = serving.predict_table(serving.load(f"models:/{MODEL}@champion"), patches)
    served_accuracy = float((served["predicted_label"].to_numpy() == labels).mean())
    at_half = float(((served["p_calcification"].to_numpy() > 0.5).astype(int) == labels).mean())
    gate_probabilities, gate_threshold = serving.score_with_threshold(f"models:/{MODEL}/{result.version}", patches)
    assert gate_threshold == 0.2  # what the gate labels with: the same label as served, on every patch
    np.testing.assert_array_equal(
        evaluation.predict_labels(gate_probabilities, threshold=gate_threshold), served["predicted_label"]
    )
    assert result.decision.candidate_score == pytest.approx(served_accuracy)  # the gate's accuracy is the served one
    print(
        f"gate accuracy {result.decision.candidate_score:.4f}, served labels' accuracy {served_accuracy:.4f}, "
        f"accuracy at 0.5 {at_half:.4f} ({len(labels)} test patches, threshold {gate_threshold})"
    )
    assert served_accuracy != pytest.approx(at_half)  # and it is not the 0.5 one: the test can tell them apart
    assert _version(result.version).tags["gate_candidate_threshold"] == "0.2"
    # The same net served at 0.5 is judged at 0.5 against the champion at 0.2: the patches it alone gets wrong count.
    same_net_at_half = log_run_with_threshold(dataset, net, threshold=0.5, val_auc=0.9)
    second = promotion.promote(run_id=same_net_at_half)
    assert not second.decision.promoted and second.decision.champion_score == pytest.approx(served_accuracy)
    assert second.decision.candidate_score == pytest.approx(at_half)
    assert (second.decision.candidate_only_right, second.decision.champion_only_right) == (
        0, round((served_accuracy - at_half) * len(labels))
    )  # fmt: skip


def other_dataset(root: Path, *, source: str = "cbis-ddsm") -> PreparedDataset:
    """A second prepared dataset (other content, so another digest; another source): 22 test patches."""
    made = make_dataset(root / "staged", test_mass=10)
    return write_prepared(
        root / source, patches=np.asarray(made.patches), manifest=made.manifest, source=source,
        options={"image_size": 32, "source": source},
    )  # fmt: skip


def log_run(dataset: PreparedDataset, threshold: float, *, val_auc: float, **params: str) -> str:
    """A training run as train logs one, with protocol params (split_by, val_fraction, folds) as given."""
    with tracking.start_run(run_name=f"run-{threshold}") as run:
        protocol = {"split_by": "patient", "val_fraction": "0.2"} | params
        tracking.log_params({"variant": "model5", "data_digest": dataset.digest, "data_source": dataset.source,
                             "image_size": 32, **protocol})  # fmt: skip
        tracking.log_metrics({"kept_val_auc": val_auc})
        tracking.log_prepared_input(dataset)
        serving.log_model(threshold_model(threshold), image_size=32, input_example=np.asarray(dataset.patches[:2]))
        return run.info.run_id


@pytest.mark.slow
def test_promote_stops_on_two_datasets_and_promotes_within_the_one_data_names(tmp_path: Path, capsys) -> None:
    synthetic = make_dataset(tmp_path / "synthetic")
    real = other_dataset(tmp_path)
    easy = log_run(synthetic, 0.3, val_auc=0.95)  # the easier synthetic validation scores higher
    own = log_run(real, 0.65, val_auc=0.80)
    assert mlflow.get_run(own).data.tags[tracking.DATASET_TAG] == f"cbis-ddsm-{real.digest}"  # the UI's Group by
    assert mlflow.get_run(easy).data.tags[tracking.DATASET_TAG] == f"synthetic-{synthetic.digest}"

    assert promote_entry.main([]) == 2
    message = capsys.readouterr().err
    assert f"{synthetic.digest} (synthetic, 44 patches at {synthetic.path}, 1 run)" in message
    assert f"{real.digest} (cbis-ddsm, 42 patches at {real.path}, 1 run)" in message and "--data" in message
    assert _registered_models() == []  # nothing registered, no lock left

    assert promote_entry.main(["--data", str(real.path)]) == 0
    assert "PROMOTED" in capsys.readouterr().out
    assert _version(_aliases()["champion"]).run_id == own
    # With a champion, promote alone follows its dataset: the synthetic run is never the candidate.
    again = promotion.promote()
    assert again.run_id == own and "already the champion" in again.decision.reason
    with pytest.raises(ConfigError, match=rf"run {easy} was trained on dataset synthetic-{synthetic.digest}"):
        promotion.promote(run_id=easy, data=real.path)  # a model is gated on its own dataset's test split


@pytest.mark.slow
def test_a_champion_of_another_dataset_is_replaced_only_by_a_rebaseline(tmp_path: Path, capsys) -> None:
    synthetic = make_dataset(tmp_path / "synthetic")
    real = other_dataset(tmp_path)
    log_run(synthetic, 0.65, val_auc=0.95)
    own = log_run(real, 0.3, val_auc=0.80)  # right on every real test patch; the champion misses 4 of them
    assert promotion.promote(data=synthetic.path).decision.promoted
    assert promote_entry.main(["--data", str(real.path)]) == 2
    message = capsys.readouterr().err
    assert f"was trained on dataset synthetic-{synthetic.digest}" in message and "--rebaseline" in message
    assert _aliases() == {"champion": "1", "challenger": "1"}  # nothing registered, nothing moved
    assert len(MlflowClient().search_model_versions(f"name = '{MODEL}'")) == 1

    assert promote_entry.main(["--data", str(real.path), "--rebaseline"]) == 0
    assert "re-baseline" in capsys.readouterr().out
    assert _aliases() == {"champion": "2", "challenger": "2", "previous-champion": "1"}
    second = _version("2")
    assert second.run_id == own and second.tags["gate_rebaseline"] == "true"
    assert (
        second.tags["gate_champion_data_digest"] == synthetic.digest and second.tags["gate_data_digest"] == real.digest
    )
    assert float(second.tags["gate_champion_score"]) == pytest.approx(18 / 22)  # the champion on the real test split
    assert f"**Re-baseline**: the champion it was gated against was trained on another dataset (synthetic-{synthetic.digest})" in second.description  # fmt: skip


@pytest.mark.slow
def test_per_image_and_cross_validation_runs_never_win_by_default(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "prepared")
    leaky = log_run(dataset, 0.3, val_auc=0.99, split_by="image")
    log_run(dataset, 0.3, val_auc=0.98, folds="5", fold="0")
    with pytest.raises(ConfigError, match=r"validated per image .* pass --allow-image-split"):
        promotion.promote(data=dataset.path)
    assert _registered_models() == []
    assert promotion.promote(allow_image_split=True).run_id == leaky  # asked for: ranked (the CV fold never is)
    plain = log_run(dataset, 0.65, val_auc=0.70)
    assert promotion.promote().run_id == plain  # by default the per-image champion's protocol is not followed


def test_runs_of_several_protocols_stop_until_a_champion_picks_one(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "prepared")
    first = log_run(dataset, 0.65, val_auc=0.70)
    log_run(dataset, 0.3, val_auc=0.90, val_fraction="0.3")
    with pytest.raises(
        ConfigError,
        match=r"validated under 2 protocols \(32 px, split_by=patient, val_fraction=0.3 \(1 run\); 32 px.*--run-id",
    ):
        promotion.promote()
    assert _registered_models() == []
    assert promotion.promote(run_id=first).decision.promoted
    again = promotion.promote()  # the champion's protocol ranks: the higher val_auc at val_fraction 0.3 does not
    assert again.run_id == first and "already the champion" in again.decision.reason
