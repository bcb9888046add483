"""The study job: Optuna trials as nested MLflow runs under one parent run per invocation.

Each trial is a run nested under the invocation's parent run, with the `train` params and
per-epoch metrics, tagged with the study name, the trial number and its final state
(`optuna_trial_state` = complete / pruned / failed). Every complete trial logs its test metrics
and predictions (selection uses the validation metric only; the predictions let the best model
be paired with Model 5). A pruned trial stops at the epoch the pruner chose and its run ends
KILLED: FINISHED would put half-trained runs among the finished ones in the UI, FAILED would call
an expected outcome an error. A failed trial's run ends FAILED with the error's first line as the
`mammo.error` tag and the traceback as `errors/traceback.txt`. The study goes on past the
project's own expected failures (`MammoError`: a bad point of the space, an undefined metric, an
out-of-memory trial, all raised as `TrialError` or `ConfigError`); anything else is a bug and stops
the worker.

Workers share the study through its storage (`mammo.search.workers`): `--max-trials` is a budget for
the whole study, and when a worker dies mid-trial, a surviving worker fails its trial (heartbeat
storages) or `--fail-running-trials` does (journal), re-queues it, and ends the dead trial's run
and the dead worker's parent run FAILED, so no run is left RUNNING.

The best model is the best trial's own model, not a retrained one. A trial that improves on the
study's best when it completes logs everything `train` logs (figures, summary, the model), so
the final best trial, which was the best when it completed, always holds its model whichever
worker or invocation ran it, while the other trials skip the figures and the model. Only a
best trial without a model (from a study run by an older version) is retrained, in a
`best-trial-N-retrain` run.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from mammo import tracking
from mammo.core.errors import ConfigError, MammoError, TrialError
from mammo.data.store import PreparedDataset
from mammo.search import space, study_report, workers
from mammo.search.trial_runs import (  # noqa: F401 (ERROR_TAG, TRACEBACK_FILE: the names tests and callers use)
    ERROR_TAG,
    MODEL_ATTR,
    RUN_ID_ATTR,
    TRACEBACK_FILE,
    WORKER_ATTR,
    WORKER_TAG,
    end_dead_trial_runs,
    record_failure,
    worker_name,
)

if TYPE_CHECKING:  # mammo.model.variants imports Keras: loaded only once a trial is built, so bad options fail fast
    from mammo.model.variants import TrainConfig

CATCH = (MammoError,)  # the trial failures the study goes on after; anything else is a bug
SEARCH_VARIANT = "optuna"  # the variant label of trials other than Model 5
PRUNED_STATUS = "KILLED"
BEST_MODEL_CHOICES = ("keep", "skip")


@dataclass(frozen=True)
class StudySettings:
    """One invocation of the study; `None` epochs/image_size mean the schedule's / the dataset's."""

    study_name: str = space.DEFAULT_STUDY_NAME
    storage: str = space.DEFAULT_STORAGE
    sampler: str = "tpe"
    pruner: str = "median"
    metric: str = space.DEFAULT_METRIC
    n_trials: int | None = 20  # per worker
    max_trials: int | None = None  # complete + pruned trials in the whole study, all workers together
    timeout: float | None = None
    epochs: int | None = None
    image_size: int | None = None
    seed: int = 0
    schedule: str = "quick"
    best_model: str = "keep"  # keep: tag (and if needed retrain) the best model; skip: leave it to another worker
    heartbeat_interval: int = space.HEARTBEAT_INTERVAL
    grace_period: int = space.GRACE_PERIOD
    max_retry: int = space.MAX_RETRY
    verbose: int | None = None
    backbones: tuple[str, ...] = ()  # pretrained backbones the space may pick besides the scratch family
    weights: str = "imagenet"  # a backbone trial's starting weights (imagenet, none or a file)

    def check(self) -> None:
        """Every bad value named with its fix, before the storage or TensorFlow is touched."""
        space.metric_direction(self.metric)
        space.storage_kind(self.storage)
        space.make_sampler(self.sampler, seed=self.seed)
        space.make_pruner(self.pruner, epochs=self.epochs or 1)
        if self.n_trials is None and self.timeout is None and self.max_trials is None:
            raise ConfigError("give --n-trials, --max-trials or --timeout: otherwise the study never stops.")
        if self.n_trials is not None and self.n_trials < 1:
            raise ConfigError(f"--n-trials must be at least 1, got {self.n_trials}.")
        if self.max_trials is not None and self.max_trials < 1:
            raise ConfigError(f"--max-trials must be at least 1, got {self.max_trials}.")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"--timeout must be a positive number of seconds, got {self.timeout}.")
        from mammo.model.backbones import BACKBONES, check_weights

        unknown = [name for name in self.backbones if name not in BACKBONES]
        if unknown:
            raise ConfigError(f"--backbones: unknown {unknown}; choose from {', '.join(BACKBONES)} (comma-separated).")
        if self.backbones:
            check_weights(self.weights)
        if self.best_model not in BEST_MODEL_CHOICES:
            raise ConfigError(f"--best-model must be one of {', '.join(BEST_MODEL_CHOICES)}; got {self.best_model!r}.")


DEFAULT_N_TRIALS = 20
SETTING_NAMES = tuple(field.name for field in dataclasses.fields(StudySettings) if field.name != "verbose")
NONE_IS_A_CHOICE = ("n_trials", "max_trials", "timeout", "epochs", "image_size")  # no limit / schedule's / dataset's


def settings_from_options(options: dict[str, Any], *, quiet: bool = False) -> StudySettings:
    """Settings from CLI/MLproject options: None means the default, or "unset" where that is a choice.

    Without n_trials a worker runs DEFAULT_N_TRIALS trials, unless max_trials or timeout bounds it:
    then it runs until the study's budget is met or the time is up, whatever the other workers do.
    """
    values = {name: options.get(name) for name in SETTING_NAMES}
    if values["n_trials"] is None and values["max_trials"] is None and values["timeout"] is None:
        values["n_trials"] = DEFAULT_N_TRIALS
    if isinstance(values["backbones"], str):  # --backbones vgg16,efficientnetb0
        values["backbones"] = tuple(name.strip() for name in values["backbones"].split(",") if name.strip())
    chosen = {name: value for name, value in values.items() if value is not None or name in NONE_IS_A_CHOICE}
    return StudySettings(**chosen, verbose=0 if quiet else None)


@dataclass(frozen=True)
class StudyOutcome:
    parent_run_id: str
    study: optuna.Study
    metrics: dict[str, float]
    trials_run: int  # by this invocation
    seconds: float  # of optimisation in this invocation
    best_run_id: str | None
    comparison: dict[str, Any]


def base_config(settings: StudySettings, dataset: PreparedDataset) -> TrainConfig:
    """Model 5 under the study's schedule, epochs, image size and seed: the reference trial."""
    from mammo.model.variants import make_config

    return make_config(
        "model5", schedule=settings.schedule, epochs=settings.epochs, seed=settings.seed,
        image_size=settings.image_size or dataset.image_size, weights=settings.weights if settings.backbones else None,
    )  # fmt: skip


def trial_config(base: TrainConfig, params: dict[str, Any], *, reference: bool) -> TrainConfig:
    """Model 5's config with the trial's point of the space (validated like any CLI override)."""
    from mammo.model.variants import make_config

    backbone = params.get("backbone", space.SCRATCH)
    variant, weights = ("model5", None) if backbone == space.SCRATCH else (backbone, base.weights)
    config = make_config(
        variant, schedule=base.schedule, epochs=base.epochs, seed=base.seed, image_size=base.image_size,
        precision=base.precision, weights=weights, **space.config_overrides(params),
    )  # fmt: skip
    return config if reference else dataclasses.replace(config, variant=SEARCH_VARIANT)


def reference_params(config: TrainConfig, *, backbones: tuple[str, ...] = ()) -> dict[str, Any]:
    point = space.space_params(dataclasses.asdict(config))
    return {"backbone": space.SCRATCH, **point} if backbones else point


def objective_value(history: dict[str, list[float]], *, metric: str, best_epoch: int) -> float:
    """The study metric at the kept (best-val_loss, 1-based) epoch: the model the trial would deliver."""
    values = history.get(metric)
    if not values:
        raise TrialError(f"training logged no {metric}; the study metric must be one of {list(history)}")
    value = float(values[best_epoch - 1])
    if not math.isfinite(value):
        raise TrialError(
            f"{metric} is {value} at epoch {best_epoch} (e.g. one class missing from validation, or a diverged "
            "loss); the trial fails and the study goes on."
        )
    return value


class TrialObjective:
    """One Optuna trial = one nested `train` run, pruned per epoch on the study metric."""

    def __init__(
        self, *, settings: StudySettings, dataset: PreparedDataset, base: TrainConfig, parent_run_id: str,
        experiment: str | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.dataset = dataset
        self.base = base
        self.parent_run_id = parent_run_id
        self.experiment = experiment  # the parent's, so trial runs land beside it
        self.trials_run = 0

    def __call__(self, trial: optuna.Trial) -> float:
        self.trials_run += 1
        tags = {tracking.STUDY_TAG: self.settings.study_name, tracking.TRIAL_NUMBER_TAG: str(trial.number)}
        with tracking.start_run(
            run_name=f"trial-{trial.number}", experiment=self.experiment, parent_run_id=self.parent_run_id,
            tags={**tags, "mammo.entry": "study", WORKER_TAG: worker_name()}, system_metrics=True,
        ) as run:  # fmt: skip
            # A retried stale trial inherits its predecessor's user attrs: point them at this run.
            trial.set_user_attr(RUN_ID_ATTR, run.info.run_id)
            trial.set_user_attr(MODEL_ATTR, False)
            trial.set_user_attr(WORKER_ATTR, worker_name())
            try:
                return self._train(trial)
            finally:
                import keras

                keras.backend.clear_session()  # free the trial's graph before the next one
                gc.collect()

    def _train(self, trial: optuna.Trial) -> float:
        """Train the trial's point in the active run; the run's state tag says how it ended."""
        from optuna_integration import KerasPruningCallback

        from mammo.core.precision import choose_precision
        from mammo.train.training import MlflowEpochLogger, run_params

        try:
            params = space.suggest_params(trial, image_size=self.base.image_size, backbones=self.settings.backbones)
            reference = trial.user_attrs.get(space.REFERENCE_ATTR) == space.REFERENCE_VALUE
            config = trial_config(self.base, params, reference=reference)
            tracking.set_tags({"mammo.variant": config.variant})
            tracking.log_params(run_params(config, self.dataset, precision=choose_precision(config.precision)))
            if "backbone" in params and not config.backbone:  # a backbone trial logs its own with the config
                tracking.log_params({"backbone": space.SCRATCH})
            tracking.log_prepared_input(self.dataset, context="training")
            # After the epoch logger, so a pruned trial's run keeps the epoch it was pruned at.
            callbacks = [MlflowEpochLogger(), KerasPruningCallback(trial, self.settings.metric)]
            result = fit_trial(config, self.dataset, callbacks=callbacks, verbose=self.settings.verbose)
            value = objective_value(result.history, metric=self.settings.metric, best_epoch=result.best_epoch)
        except optuna.TrialPruned:
            tracking.set_tags({tracking.TRIAL_STATE_TAG: "pruned"})
            tracking.end_run(status=PRUNED_STATUS)
            raise
        except BaseException as error:  # an error, or Ctrl-C: Optuna records both as FAIL
            tracking.set_tags({tracking.TRIAL_STATE_TAG: "failed"})
            record_failure(error)
            raise
        tracking.log_metrics({tracking.OPTUNA_VALUE: value})
        if space.improves_on_best(trial.study, value):
            from mammo.train.training import log_outcome

            log_outcome(result, config=config, dataset=self.dataset, log_model=True)  # everything `train` logs
            trial.set_user_attr(MODEL_ATTR, True)
        else:
            log_scores(result, dataset=self.dataset)
        tracking.set_tags({tracking.TRIAL_STATE_TAG: "complete"})
        return value


def fit_trial(config: TrainConfig, dataset: PreparedDataset, **kwargs: Any) -> Any:
    """`training.fit`, with running out of memory turned into a TrialError (the study goes on)."""
    import tensorflow as tf

    from mammo.train.training import fit

    try:
        return fit(config, dataset, **kwargs)
    except tf.errors.ResourceExhaustedError as error:
        first_line = (str(error.message).strip().splitlines() or ["out of memory"])[0]
        raise TrialError(
            f"the trial ran out of memory ({first_line[:200]}); the study goes on with other points. A smaller "
            "batch size or image size (--image-size) makes every trial fit."
        ) from error


def log_scores(result: Any, *, dataset: PreparedDataset) -> None:
    """A trial that is not the best so far: test metrics and predictions, no figures and no model.

    The predictions let any trial be paired with another later (McNemar); figures and a model
    are logged only by trials that improve on the best, the candidates for the kept model.
    """
    from mammo.report import evaluation, reports

    test_rows = result.splits.test_indices
    reports.log_test_report(
        probabilities=result.probabilities, dataset=dataset, indices=test_rows, plots=False, threshold=result.threshold
    )
    table = evaluation.predictions_table(
        dataset.manifest.iloc[test_rows], result.probabilities, threshold=result.threshold
    )
    tracking.log_dataframe(table, tracking.PREDICTIONS_FILE)
    tracking.log_metrics(result.kept_metrics())  # the per-epoch series stay one point per epoch


def study_params(settings: StudySettings, dataset: PreparedDataset, base: TrainConfig) -> dict[str, Any]:
    """The parent's params: the resolved settings, prefixed `study_`; unset ones (None) are left out.

    Prefixed because inside `mlflow run` the run already holds the raw entry-point parameters
    under the plain names ("" for an unset epochs), and MLflow refuses to change a logged param.
    The study name is the `optuna_study` tag.
    """
    resolved = {
        "storage": space.describe_storage(settings.storage), "sampler": settings.sampler, "pruner": settings.pruner,
        "metric": settings.metric, "n_trials": settings.n_trials, "max_trials": settings.max_trials,
        "timeout": settings.timeout, "epochs": base.epochs,
        "image_size": base.image_size, "seed": base.seed, "schedule": base.schedule,
    }  # fmt: skip
    params = {f"study_{name}": value for name, value in resolved.items() if value is not None}
    return params | {"data_source": dataset.source, "data_digest": dataset.digest}


def run_study(settings: StudySettings, dataset: PreparedDataset, *, experiment: str | None = None) -> StudyOutcome:
    """Run (or continue) the study; log the parent run's summary, plots and the best model's verdict."""
    settings.check()
    base = base_config(settings, dataset)
    tags = {tracking.STUDY_TAG: settings.study_name, "mammo.entry": "study", WORKER_TAG: worker_name()}
    with tracking.start_run(
        run_name=f"study-{settings.study_name}", experiment=experiment, tags=tags, system_metrics=True
    ) as parent:
        tracking.log_params(study_params(settings, dataset, base))
        tracking.log_prepared_input(dataset, context="training")
        study = open_study(settings, dataset=dataset, base=base)
        objective = TrialObjective(
            settings=settings, dataset=dataset, base=base, parent_run_id=parent.info.run_id, experiment=experiment
        )
        started = time.perf_counter()
        optimize(study, objective, settings)
        seconds = time.perf_counter() - started
        rate = {"trials_run": objective.trials_run, "trials_per_hour": objective.trials_run / seconds * 3600}
        best = kept_trial(study)
        metrics = study_report.log_study_summary(study, best=best, extra_metrics=rate)
        best_run_id, comparison = None, {}
        if settings.best_model == "keep" and best is not None:
            best_run_id = best_model_run(best, objective)
            comparison = compare_with_model5(study, best_run_id=best_run_id, parent_run_id=parent.info.run_id)
    return StudyOutcome(
        parent_run_id=parent.info.run_id, study=study, metrics=metrics, trials_run=objective.trials_run,
        seconds=seconds, best_run_id=best_run_id, comparison=comparison,
    )  # fmt: skip


def optimize(study: optuna.Study, objective: TrialObjective, settings: StudySettings) -> None:
    """This worker's trials: up to --n-trials / --timeout, and within the study-wide --max-trials budget."""
    if settings.max_trials is None:
        study.optimize(
            objective, n_trials=settings.n_trials, timeout=settings.timeout, catch=CATCH, gc_after_trial=True
        )
        return
    rdb = space.storage_kind(settings.storage) == "rdb"
    with workers.budget_lock(
        storage_path=space.storage_file(settings.storage), study_name=settings.study_name,
        rdb_url=space.rdb_url(settings.storage) if rdb else None,
    ) as lock:  # fmt: skip
        workers.optimize_within_budget(
            study, objective, max_trials=settings.max_trials, lock=lock, n_trials=settings.n_trials,
            timeout=settings.timeout, catch=CATCH, poll_seconds=settings.heartbeat_interval,
        )  # fmt: skip


def storage_for(settings: StudySettings) -> optuna.storages.BaseStorage:
    """The study's storage; a dead worker's trial that this process fails gets its MLflow runs ended."""
    return space.open_storage(
        settings.storage, heartbeat_interval=settings.heartbeat_interval, grace_period=settings.grace_period,
        max_retry=settings.max_retry, on_stale=end_dead_trial_runs,
    )  # fmt: skip


def fail_running_trials(settings: StudySettings) -> list[int]:
    """Fail the study's RUNNING trials, re-queue them and end their runs FAILED (no worker may be running)."""
    storage = storage_for(settings)
    try:
        study = optuna.load_study(study_name=settings.study_name, storage=storage)
    except KeyError:
        raise ConfigError(
            f"no study {settings.study_name!r} in {space.describe_storage(settings.storage)}; check --study-name "
            "and --storage."
        ) from None
    callback = workers.StaleTrialCallback(max_retry=settings.max_retry, on_stale=end_dead_trial_runs)
    return workers.fail_running_trials(study, callback=callback)


def open_study(settings: StudySettings, *, dataset: PreparedDataset, base: TrainConfig) -> optuna.Study:
    """The study in its storage, with the conditions every trial must share and Model 5 enqueued."""
    storage = storage_for(settings)
    conditions = {
        "epochs": base.epochs, "image_size": base.image_size, "data_digest": dataset.digest,
        "schedule": base.schedule, "seed": base.seed,
    }  # fmt: skip
    if settings.backbones:  # a study without backbones keeps the conditions earlier studies stored
        conditions |= {"backbones": ",".join(settings.backbones), "weights": settings.weights}
    return space.load_study(
        study_name=settings.study_name, storage=storage, metric=settings.metric,
        sampler=space.make_sampler(settings.sampler, seed=settings.seed),
        pruner=space.make_pruner(settings.pruner, epochs=base.epochs), attrs=conditions,
        reference_params=reference_params(base, backbones=settings.backbones),
    )  # fmt: skip


def compare_with_model5(study: optuna.Study, *, best_run_id: str, parent_run_id: str) -> dict[str, Any]:
    reference = space.reference_trial(study, states=(TrialState.COMPLETE,))
    return study_report.log_comparison(
        best_run_id=best_run_id, parent_run_id=parent_run_id,
        reference_run_id=reference.user_attrs.get(RUN_ID_ATTR) if reference else None,
    )  # fmt: skip


def kept_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best trial whose model is kept: on a tie, the first that logged its model.

    A trial logs its model only when it improves strictly on the study's best, so of several
    trials tied at the best value the one that completed first holds the model.
    """
    tied = space.best_trials(study)
    with_model = [trial for trial in tied if trial.user_attrs.get(MODEL_ATTR) and trial.user_attrs.get(RUN_ID_ATTR)]
    return (with_model or tied or [None])[0]


def best_model_run(best: optuna.trial.FrozenTrial, objective: TrialObjective) -> str:
    """The run holding the best trial's model: its own run, or a retrain when it logged none."""
    run_id = best.user_attrs.get(RUN_ID_ATTR)
    if run_id and best.user_attrs.get(MODEL_ATTR):
        return run_id
    from mammo.train.training import train_run

    reference = best.user_attrs.get(space.REFERENCE_ATTR) == space.REFERENCE_VALUE
    config = trial_config(objective.base, best.params, reference=reference)
    tags = {
        tracking.STUDY_TAG: objective.settings.study_name, tracking.TRIAL_NUMBER_TAG: str(best.number),
        "mammo.entry": "study", "mammo.variant": config.variant,
    }  # fmt: skip
    run_id, _, _ = train_run(
        config, objective.dataset, run_name=f"best-trial-{best.number}-retrain", parent_run_id=objective.parent_run_id,
        tags=tags, experiment=objective.experiment, verbose=objective.settings.verbose,
    )  # fmt: skip
    return run_id
