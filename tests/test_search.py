"""The Optuna side of the study with pure-Python objectives: space, storages, resume, parallel, pruning."""

from __future__ import annotations

import threading
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
from optuna.storages import JournalStorage, RDBStorage
from optuna.trial import TrialState

from mammo import tracking
from mammo.core.errors import ConfigError
from mammo.search import space
from tests.conftest import run_spawned

MODEL5_POINT = {
    "dropout": 0.5, "l2": 5e-5, "base_filters": 32, "blocks": 4, "dense_units": 48, "learning_rate": 1e-3,
    "batch_size": 128, "augment": 1.0,
}  # fmt: skip


def quadratic(trial: optuna.Trial) -> float:
    """A cheap objective over the real space: best near Model 5's dropout and learning rate."""
    params = space.suggest_params(trial, image_size=150)
    return -((params["dropout"] - 0.3) ** 2) - (params["learning_rate"] - 3e-3) ** 2 * 1e4


def test_metric_direction_rejects_test_metrics_and_unknown_names() -> None:
    assert space.metric_direction("val_auc") == "maximize"
    assert space.metric_direction("val_loss") == "minimize"
    with pytest.raises(ConfigError, match=r"test_auc is a test metric.*val_auc"):
        space.metric_direction("test_auc")
    with pytest.raises(ConfigError, match="--metric must be one of"):
        space.metric_direction("auc")


def test_space_contains_model5_and_filters_double() -> None:
    assert space.filters_for(32, 4) == (32, 64, 128, 256)
    model5 = {"filters": (32, 64, 128, 256), "dropout": 0.5, "l2": 5e-5, "dense_units": 48, "learning_rate": 1e-3}
    point = space.space_params({**model5, "batch_size": 128, "augment": 1.0})
    assert point == MODEL5_POINT
    assert space.config_overrides(point)["filters"] == (32, 64, 128, 256)
    study = optuna.create_study()
    study.enqueue_trial(point)
    trial = study.ask()
    assert space.suggest_params(trial, image_size=150) == point  # every value lies inside its range
    with pytest.raises(ConfigError, match="do not double"):
        space.space_params({**model5, "filters": (32, 48, 96, 192), "batch_size": 128, "augment": 1.0})


def test_depth_is_capped_by_image_size() -> None:
    assert space.max_blocks(150) == 5  # 150→74→36→17→7→2
    assert space.max_blocks(32) == 3  # 32→15→6→2 then a 3×3 conv no longer fits
    assert space.min_image_size(4) == 46
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    depths = {space.suggest_params(study.ask(), image_size=32)["blocks"] for _ in range(10)}
    assert depths == {3}
    with pytest.raises(ConfigError, match=r"too small.*at least 22 pixels"):
        space.suggest_params(study.ask(), image_size=12)


def test_depth_cap_agrees_with_the_model_builder() -> None:
    from mammo.model.variants import feature_size

    for size in range(16, 160):
        assert space.max_blocks(size) == max(blocks for blocks in range(8) if feature_size(size, blocks) >= 1)


def test_storage_forms(tmp_path: Path) -> None:
    assert isinstance(space.open_storage(f"journal:{tmp_path}/a/s.journal"), JournalStorage)
    assert isinstance(space.open_storage(str(tmp_path / "s.log")), JournalStorage)
    rdb = space.open_storage(f"sqlite:///{tmp_path}/optuna.db", heartbeat_interval=5, grace_period=15)
    assert isinstance(rdb, RDBStorage)
    assert rdb.get_heartbeat_interval() == 5
    assert rdb.get_heartbeat_stale_trial_callback() is not None
    with pytest.raises(ConfigError, match=r"neither an RDB URL nor a journal file.*sqlite:///optuna.db"):
        space.open_storage(str(tmp_path / "optuna.db"))
    with pytest.raises(ConfigError, match="grace period longer"):
        space.open_storage(f"sqlite:///{tmp_path}/x.db", heartbeat_interval=10, grace_period=10)


def test_sampler_and_pruner_choices() -> None:
    for name in ("tpe", "random"):
        assert isinstance(space.make_sampler(name, seed=0), space.PerTrialSeedSampler)
    with pytest.raises(ConfigError, match="--sampler must be one of"):
        space.make_sampler("cmaes", seed=0)
    with pytest.raises(ConfigError, match="--pruner must be one of"):
        space.make_pruner("percentile", epochs=3)
    median = space.make_pruner("median", epochs=3)
    assert isinstance(median, optuna.pruners.MedianPruner)
    assert isinstance(space.make_pruner("hyperband", epochs=3), optuna.pruners.HyperbandPruner)
    assert isinstance(space.make_pruner("none", epochs=3), optuna.pruners.NopPruner)


def test_per_trial_seed_makes_trials_reproducible_and_distinct() -> None:
    """Two independent samplers with one seed agree per trial number, yet trial 0 ≠ trial 1."""

    def draws(first_number: int) -> list[dict]:
        study = optuna.create_study(sampler=space.make_sampler("tpe", seed=7))
        for _ in range(first_number):  # shift the numbering, as another worker's trials would
            study.add_trial(optuna.create_trial(state=TrialState.FAIL))
        return [space.suggest_params(study.ask(), image_size=150) for _ in range(2)]

    first, second = draws(0), draws(0)
    assert first == second
    assert first[0] != first[1]
    assert draws(1)[0] == first[1]  # trial number 1 draws the same point whoever asks for it


def test_resume_continues_and_enqueues_model5_once(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/optuna.db"
    for _ in range(2):
        study = space.load_study(
            study_name="s", storage=storage, metric="val_auc", sampler=space.make_sampler("tpe", seed=0),
            attrs={"epochs": 2}, reference_params=MODEL5_POINT,
        )  # fmt: skip
        study.optimize(quadratic, n_trials=3)
    trials = study.get_trials()
    assert [trial.number for trial in trials] == list(range(6))
    assert trials[0].params == MODEL5_POINT
    assert [trial.number for trial in trials if trial.user_attrs.get(space.REFERENCE_ATTR)] == [0]
    assert space.reference_trial(study).number == 0
    assert space.trial_counts(study)["trials_complete"] == 6
    assert study.user_attrs == {"mammo_metric": "val_auc", "mammo_epochs": 2}


def test_study_made_elsewhere_gets_model5_once_it_has_trials(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/optuna.db"
    foreign = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    foreign.optimize(quadratic, n_trials=1)
    for _ in range(2):
        study = space.load_study(study_name="s", storage=storage, metric="val_auc", reference_params=MODEL5_POINT)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [trial.user_attrs[space.REFERENCE_ATTR] for trial in waiting] == ["model5"]


def test_resume_with_other_settings_is_refused(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/optuna.db"
    space.load_study(study_name="s", storage=storage, metric="val_auc", attrs={"epochs": 2})
    with pytest.raises(ConfigError, match=r"epochs=2 \(now 3\).*new --study-name"):
        space.load_study(study_name="s", storage=storage, metric="val_auc", attrs={"epochs": 3})
    with pytest.raises(ConfigError, match=r"created to maximize.*val_loss needs minimize"):
        space.load_study(study_name="s", storage=storage, metric="val_loss", attrs={"epochs": 2})


def test_median_pruner_prunes_within_a_six_trial_study() -> None:
    """With the default n_startup_trials=5 almost nothing would be pruned in six trials."""
    study = optuna.create_study(direction="maximize", pruner=space.make_pruner("median", epochs=3))
    quality = iter([0.9, 0.8, 0.1, 0.95, 0.2, 0.05])

    def objective(trial: optuna.Trial) -> float:
        level = next(quality)
        for epoch in range(3):
            trial.report(level * (epoch + 1) / 3, step=epoch)
            if trial.should_prune():
                raise optuna.TrialPruned
        return level

    study.optimize(objective, n_trials=6)
    pruned = [trial.number for trial in study.trials if trial.state == TrialState.PRUNED]
    assert pruned == [2, 4, 5]
    assert space.trial_counts(study)["trials_pruned"] == 3


def _journal_worker(path: str, n_trials: int) -> None:
    study = space.load_study(
        study_name="shared", storage=space.open_storage(path), metric="val_auc",
        sampler=space.make_sampler("tpe", seed=0), reference_params=MODEL5_POINT,
    )  # fmt: skip
    study.optimize(quadratic, n_trials=n_trials)


@pytest.mark.slow
def test_two_processes_share_one_journal_study(tmp_path: Path) -> None:
    path = str(tmp_path / "optuna.journal")
    run_spawned(_journal_worker, (path, 4), count=2, timeout=120)
    study = optuna.load_study(study_name="shared", storage=space.open_storage(path))
    numbers = [trial.number for trial in study.trials]
    assert sorted(numbers) == list(range(8))
    assert space.trial_counts(study)["trials_complete"] == 8
    references = [trial for trial in study.trials if trial.user_attrs.get(space.REFERENCE_ATTR)]
    assert [trial.number for trial in references] == [0]  # only the creating process enqueued Model 5
    points = {tuple(sorted(trial.params.items())) for trial in study.trials}
    assert len(points) == 8  # seeded per trial number: the two workers did not repeat each other


def test_a_worker_loading_a_brand_new_study_waits_for_its_creator_to_enqueue_model5(tmp_path: Path) -> None:
    """The CI race: the second worker loaded the study before its creator had enqueued Model 5 as trial 0."""
    storage = space.open_storage(str(tmp_path / "optuna.journal"))
    creator = optuna.create_study(study_name="shared", storage=storage, direction="maximize")
    late = threading.Timer(
        0.5, creator.enqueue_trial, (MODEL5_POINT,), {"user_attrs": {space.REFERENCE_ATTR: space.REFERENCE_VALUE}}
    )
    late.start()
    study = space.load_study(study_name="shared", storage=storage, metric="val_auc", reference_params=MODEL5_POINT)
    study.optimize(quadratic, n_trials=1)  # at once, as a worker does
    late.join()
    study.optimize(quadratic, n_trials=1)
    references = [trial.number for trial in study.trials if trial.user_attrs.get(space.REFERENCE_ATTR)]
    assert references == [0]  # the creator's enqueue is trial 0, and the loader did not enqueue a second one
    assert study.trials[0].params == MODEL5_POINT
    assert [trial.state for trial in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE]


def test_best_trial_is_none_before_any_trial_completes() -> None:
    study = optuna.create_study()
    assert space.best_trial(study) is None
    values = [0.3, 0.7, 0.7, 0.1]  # trial 1 is best; trial 2 ties it later
    study.optimize(lambda trial: values[trial.number], n_trials=4)
    assert space.best_trial(study).number == 3  # minimize (Optuna's default direction): 0.1 is trial 3
    maximize = optuna.create_study(direction="maximize")
    maximize.optimize(lambda trial: values[trial.number], n_trials=4)
    assert space.best_trial(maximize).number == 1  # a tie goes to the first trial that reached it
    assert [trial.number for trial in space.best_trials(maximize)] == [1, 2]


# --- the parent run's report (mammo.search.study_report), on pure-Python studies -----------------------


def _study_with_values(values: list[float], *, direction: str = "maximize") -> optuna.Study:
    study = optuna.create_study(direction=direction, sampler=space.make_sampler("random", seed=0))
    study.enqueue_trial(MODEL5_POINT, user_attrs={space.REFERENCE_ATTR: space.REFERENCE_VALUE})
    remaining = iter(values)

    def objective(trial: optuna.Trial) -> float:
        space.suggest_params(trial, image_size=150)
        return next(remaining)

    study.optimize(objective, n_trials=len(values))
    return study


def test_summary_reports_counts_best_params_and_the_gain_over_model5() -> None:
    from mammo.search import study_report

    params, metrics = study_report.study_summary(_study_with_values([0.70, 0.75, 0.65]))
    assert metrics["trials_complete"] == 3 and metrics["trials_pruned"] == 0 and metrics["trials_failed"] == 0
    assert metrics["best_value"] == 0.75 and metrics["best_trial_number"] == 1
    assert metrics["model5_value"] == 0.70
    assert metrics["improvement_over_model5"] == pytest.approx(0.05)
    assert set(params) == {f"best_{name}" for name in MODEL5_POINT} | {"best_filters"}
    assert metrics["best_dropout"] == params["best_dropout"]
    _, loss_metrics = study_report.study_summary(_study_with_values([0.40, 0.50], direction="minimize"))
    assert loss_metrics["improvement_over_model5"] == 0.0  # Model 5 stays best on val_loss: no gain


def test_figures_explain_what_a_small_study_cannot_plot() -> None:
    from mammo.search import study_report

    figures = study_report.study_figures(_study_with_values([0.7]))
    assert set(figures) == set(study_report.PLOTS)
    importances = figures[tracking.PLOT_OPTUNA_IMPORTANCES]
    texts = [text.get_text() for axes in importances.axes for text in axes.texts]
    assert any("needs ≥ 2 complete trials; the study has 1" in text for text in texts)
    history = figures[tracking.PLOT_OPTUNA_HISTORY]
    assert len(history.axes[0].collections) >= 1  # a real scatter of the one trial, not a placeholder
    empty = study_report.study_figures(optuna.create_study())
    assert all(figure.axes[0].texts for figure in empty.values())


def _predictions(probabilities: list[float], labels: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"index": range(len(labels)), "label": labels, "probability": probabilities})


def test_comparison_with_model5_is_paired_and_needs_significance() -> None:
    from mammo.search import study_report

    labels = [0, 1] * 20
    model5 = _predictions([0.9 if label == 0 else 0.1 for label in labels[:16]] + [0.2, 0.8] * 12, labels)  # 24/40
    better = _predictions([0.2, 0.8] * 20, labels)  # all 40 right: 16 discordant pairs, all for the new model
    verdict = study_report.compare_with_reference(better, model5)
    assert verdict["only_best_right"] == 16 and verdict["only_model5_right"] == 0
    assert verdict["p_value"] == pytest.approx(2 * 0.5**16)
    assert verdict["beats_model5"] is True
    right_36 = _predictions([0.2, 0.8] * 18 + [0.9, 0.1] * 2, labels)
    right_34 = _predictions([0.2, 0.8] * 17 + [0.9, 0.1] * 3, labels)
    close = study_report.compare_with_reference(right_36, right_34)
    assert close["test_accuracy_best"] > close["test_accuracy_model5"] and close["p_value"] > 0.05
    assert close["beats_model5"] is False  # 2 discordant patches are no evidence
    with pytest.raises(ValueError, match="same patches"):
        study_report.compare_with_reference(better, model5.iloc[:-1])


def test_model5_of_another_dataset_is_no_reference() -> None:
    from mammo.search import study_report

    labels = [0, 1] * 20
    run_ids = []
    for digest, probabilities in (("d1", [0.2, 0.8] * 20), ("d2", [0.8, 0.2] * 20)):
        with tracking.start_run(run_name=digest) as run:
            tracking.log_params({"data_digest": digest})
            tracking.log_dataframe(_predictions(probabilities, labels), tracking.PREDICTIONS_FILE)
            run_ids.append(run.info.run_id)
    with tracking.start_run(run_name="parent") as parent:
        pass
    verdict = study_report.log_comparison(
        best_run_id=run_ids[0], reference_run_id=run_ids[1], parent_run_id=parent.info.run_id
    )
    assert verdict["beats_model5"] == "unknown" and "trained on dataset d2, the best run on d1" in verdict["reason"]
    assert mlflow.get_run(parent.info.run_id).data.tags[tracking.BEATS_MODEL5_TAG] == "unknown"
