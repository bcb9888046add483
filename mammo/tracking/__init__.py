"""Every MLflow name and call in one place, so the UI columns never drift.

Tracking URI comes from MLflow's usual settings (MLFLOW_TRACKING_URI; default
`sqlite:///mlflow.db` in the working directory). Inside `mlflow run`, MLFLOW_RUN_ID names the
run the project opened; `start_run` reuses it and nested runs get an explicit parent.
"""

from __future__ import annotations

import json
import os
import tempfile
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import mlflow

from mammo.core.booleans import parse_boolean
from mammo.core.errors import hide_passwords

EXPERIMENT = "mammo-mass-calc"
# MLflow 3's experiment kind: "Model training" (runs table), not the GenAI overview. The 3.17 UI
# itself follows its GenAI / Model training toggle (or `?workflowType=machine_learning` in a link).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
MODEL_NAME = "mammo-cnn"
MODEL_ARTIFACT = "model"
ALIAS_CHAMPION = "champion"
ALIAS_CHALLENGER = "challenger"
ALIAS_PREVIOUS = "previous-champion"
ENTRY_TAG = "mammo.entry"  # which entry point made the run: prepare, train, train_all, study, promote, ...
VARIANT_TAG = "mammo.variant"
# `<source>-<digest>` of the prepared dataset a run trained or was scored on: a column of the runs table
# to Group by, so runs of different datasets are never read as one ranking.
DATASET_TAG = "mammo.dataset"
KEPT_WEIGHTS_TAG = "mammo.kept_weights_sha256"  # the kept weights' bytes: equal tags, bit-identical weights
CHECKPOINT_ARTIFACTS = "checkpoint"  # a run's last uploaded epoch checkpoint (train --checkpoint-every)

PARAM_NAMES = (
    "variant", "filters", "dense_units", "dropout", "l2", "learning_rate", "lr_decay",
    "batch_size", "epochs", "patience", "augment", "image_size", "split_by", "val_fraction",
    "seed", "data_source", "data_digest",
)  # fmt: skip
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "val_auc", "learning_rate")
BACKBONE_EPOCH_METRICS = ("phase",)  # a backbone run's epochs also say their fine-tuning phase (1 head, 2 top blocks)
TEST_METRICS = (
    "test_accuracy", "test_accuracy_ci_low", "test_accuracy_ci_high", "test_auc", "test_loss",
    "test_balanced_accuracy", "test_recall_mass", "test_recall_calc", "test_wrong", "test_worst",
    "test_ece",
)  # fmt: skip
# The decision metrics above are counted at the model's own threshold (chosen on validation, the
# rule serving applies); these are the published analysis's figures at 0.5, for the published comparison.
AT_HALF_METRICS = ("test_accuracy_at_0_5", "test_wrong_at_0_5", "test_worst_at_0_5")
# The kept (best-val_loss) checkpoint's validation scores, one value each. The per-epoch series
# keep their Keras names with one point per epoch, so their latest value is the last epoch's;
# what a run reports as its validation score (what promote and the study rank on) is these.
KEPT_PREFIX = "kept_"
KEPT_METRICS = ("kept_val_loss", "kept_val_accuracy", "kept_val_auc")
FINAL_METRICS = (*TEST_METRICS, *AT_HALF_METRICS, *KEPT_METRICS, "best_epoch")


def kept_metric(name: str) -> str:
    """`val_auc` → `kept_val_auc`: the name under which a run reports the kept checkpoint's value."""
    return name if name.startswith(KEPT_PREFIX) else f"{KEPT_PREFIX}{name}"


END_SUFFIX = "_end"

PLOT_CURVES = "plots/curves.png"
PLOT_CONFUSION = "plots/confusion.png"
PLOT_ROC = "plots/roc.png"
PLOT_CALIBRATION = "plots/calibration.png"
PLOT_WORST = "plots/worst.png"
PLOT_SAMPLES = "plots/samples.png"
PLOT_GRADCAM_WORST = "plots/gradcam_worst.png"  # Grad-CAM of the patches plots/worst.png shows
PLOT_GRADCAM_CORRECT = "plots/gradcam_correct.png"  # Grad-CAM of a seeded sample of correct patches per class
SUBGROUPS_FILE = "subgroups.csv"  # accuracy and AUC with 95 % CIs per pathology, view, density, subtlety
PLOT_SUBGROUPS = "plots/subgroups.png"
PREDICTIONS_FILE = "predictions.csv"
SUMMARY_FILE = "model_summary.txt"
SKIP_REPORT_FILE = "skip_report.csv"
PLOT_COMPARISON = "plots/comparison.png"
COMPARISON_FILE = "comparison.csv"
COMPARISON_MARKDOWN = "comparison.md"
CV_FILE = "cv_comparison.csv"  # train_all --folds: mean ± sd of kept val AUC/accuracy per variant, corrected p
CV_MARKDOWN = "cv_comparison.md"
CV_PAIRWISE_FILE = "cv_pairwise_p.csv"  # corrected paired p on val AUC between every two variants
MCNEMAR_PREFIX = "mcnemar_p_"  # + variant: McNemar p vs model5, logged on the train_all parent run


def use_experiment(name: str | None = None) -> str:
    """Select (creating if needed) the experiment; returns its id.

    Inside `mlflow run` the run already belongs to the experiment the CLI chose, so the
    experiment named by MLFLOW_EXPERIMENT_ID / MLFLOW_EXPERIMENT_NAME wins over the default.
    """
    env_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
    if name is None and env_id:
        _mark_training(mlflow.set_experiment(experiment_id=env_id))
        return env_id
    name = name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
    if mlflow.get_experiment_by_name(name) is None:
        with suppress(mlflow.exceptions.MlflowException):  # another worker may create it first
            mlflow.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    experiment = mlflow.set_experiment(name)
    _mark_training(experiment)
    return experiment.experiment_id


def _mark_training(experiment: Any) -> None:
    """Tag an experiment made elsewhere (e.g. by `mlflow run`) as ours; a read-only user leaves it as it is."""
    if experiment.tags.get(EXPERIMENT_KIND_TAG):
        return
    with suppress(mlflow.exceptions.MlflowException):
        mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


_STORES_READY: set[str] = set()


def ready_store() -> None:
    """Create a local SQLite tracking store under a file lock, once per process and URI.

    MLflow creates and migrates a new SQLite store's tables on first use, and several processes
    doing it at once (parallel `prepare` or `study` workers on `sqlite:///mlflow.db`) fail with
    "duplicate column". One process at a time makes it; the others then find it made.
    """
    uri = mlflow.get_tracking_uri()
    if uri in _STORES_READY or not uri.startswith("sqlite:///"):
        return
    import filelock

    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(f"{database}.init-lock"):
        mlflow.MlflowClient().search_experiments(max_results=1)  # creates or migrates the tables
    _STORES_READY.add(uri)


@contextmanager
def start_run(
    *, run_name: str | None = None, experiment: str | None = None, nested: bool = False, parent_run_id: str | None = None,
    tags: Mapping[str, str] | None = None, system_metrics: bool | None = None, run_id: str | None = None,
) -> Iterator[mlflow.ActiveRun]:  # fmt: skip
    """Open a run, reopen `run_id` (a resumed training), or resume the one `mlflow run` created (MLFLOW_RUN_ID).

    `system_metrics` turns on MLflow's system metrics (CPU, memory; GPU where pynvml finds one),
    sampled in a background thread, so the UI's System metrics tab is filled for training runs.
    None leaves it to MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.
    """
    ready_store()
    if run_id is not None:
        with mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics) as run:
            yield run
        return
    active = mlflow.active_run()
    if active is not None and not nested and parent_run_id is None:
        yield active
        return
    if not nested and parent_run_id is None and os.environ.get("MLFLOW_RUN_ID"):
        # `mlflow run` created the run; its id is in the environment. Popped, as MLflow does when it
        # reads it itself: left there, the next nested start_run would resume this run, not make a child.
        run_id = os.environ.pop("MLFLOW_RUN_ID")
        with mlflow.start_run(run_id=run_id, tags=dict(tags or {}), log_system_metrics=system_metrics) as run:
            if run_name:
                mlflow.set_tag("mlflow.runName", run_name)
            yield run
        return
    use_experiment(experiment)
    with mlflow.start_run(
        run_name=run_name,
        nested=nested or parent_run_id is not None,
        parent_run_id=parent_run_id,
        tags=dict(tags or {}),
        log_system_metrics=system_metrics,
    ) as run:
        yield run


def project_run_id() -> str | None:
    """The run `mlflow run` opened for this process (MLFLOW_RUN_ID), read without taking it."""
    return os.environ.get("MLFLOW_RUN_ID") or None


def refuse_finished(run_id: str) -> None:
    """A ConfigError unless `run_id` is a run that can go on (RUNNING after a kill, FAILED, KILLED)."""
    from mammo.core.errors import ConfigError

    status = get_run(run_id).info.status
    if status == "FINISHED":
        raise ConfigError(f"run {run_id} is FINISHED: there is nothing to resume; train a new run without --resume.")


def metric_steps(run_id: str, name: str) -> frozenset[int]:
    """The steps at which a run has logged metric `name`."""
    return frozenset(metric.step for metric in mlflow.MlflowClient().get_metric_history(run_id, name))


def log_artifact(local_path: Path, artifact_path: str) -> None:
    """Upload one file to the active run's artifacts under `artifact_path`, replacing an older copy."""
    mlflow.log_artifact(str(local_path), artifact_path=artifact_path)


def fetch_artifact(run_id: str, artifact_file: str, folder: Path) -> Path | None:
    """Download one artifact of a run into `folder` (under its own name); None when the run has none."""
    import shutil

    listed = {info.path for info in mlflow.MlflowClient().list_artifacts(run_id, str(Path(artifact_file).parent))}
    if artifact_file not in listed:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_file, dst_path=tmp)
        return Path(shutil.move(path, folder / Path(artifact_file).name))


UI_LOCAL = "http://127.0.0.1:5000"  # where `make ui` serves a local store
UI_TRAINING_VIEW = "workflowType=machine_learning"


def ui_link(experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI page of an experiment (or run) in the "Model training" view.

    MLflow 3.17's UI picks its view from a global GenAI / Model training switch (default GenAI, kept
    in the browser's local storage) and not from the experiment's `mlflow.experimentKind` tag, so a
    bare link opens the GenAI overview; `?workflowType=machine_learning` opens the runs table.
    """
    uri = mlflow.get_tracking_uri()
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else UI_LOCAL
    page = f"runs/{run_id}" if run_id else "runs"
    return f"{base}/#/experiments/{experiment_id}/{page}?{UI_TRAINING_VIEW}"


def log_params(params: Mapping[str, Any]) -> None:
    """Params are logged once, as strings MLflow accepts (tuples joined with '-').

    Inside `mlflow run` the project has already logged the -P values it was given (e.g. "1e-4",
    "true" or "" for "the variant's default"), and MLflow refuses to change a param. A value that
    means the same is not logged again; one that differs (a default resolved by mammo) is logged
    as `resolved_<key>`, so nothing is lost and the run still starts.
    """
    texts = {key: _param_text(value) for key, value in params.items()}
    run = mlflow.active_run()
    logged = mlflow.get_run(run.info.run_id).data.params if run is not None else {}
    fresh = {}
    for key, text in texts.items():
        if key not in logged:
            fresh[key] = text
        elif not _same_value(logged[key], text):
            fresh[f"resolved_{key}"] = text
    if fresh:
        mlflow.log_params(fresh)


def _same_value(first: str, second: str) -> bool:
    if first == second:
        return True
    try:
        return _as_number(first) == _as_number(second)
    except ValueError:
        return False


def _as_number(text: str) -> float:
    """A logged param as a number: "true" and 1.0 are the same value (mammo.core.booleans' words)."""
    try:
        return float(parse_boolean(text))
    except ValueError:
        return float(text)


def _param_text(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "-".join(str(v) for v in value)
    return str(value)


def log_metrics(metrics: Mapping[str, float], *, step: int | None = None) -> None:
    mlflow.log_metrics({key: float(value) for key, value in metrics.items()}, step=step)


def active_param(name: str) -> str | None:
    """A param of the active run as logged (None without an active run or when it was not logged)."""
    run = mlflow.active_run()
    return mlflow.get_run(run.info.run_id).data.params.get(name) if run is not None else None


def log_figure(figure: Any, artifact_file: str) -> None:
    """Log a matplotlib figure under its constant name and free it."""
    import matplotlib.pyplot as plt

    mlflow.log_figure(figure, artifact_file)
    plt.close(figure)


def log_text(text: str, artifact_file: str) -> None:
    mlflow.log_text(text, artifact_file)


def log_dict(data: Mapping[str, Any], artifact_file: str) -> None:
    mlflow.log_dict(dict(data), artifact_file)


def log_dataframe(frame: Any, artifact_file: str) -> None:
    """Log a pandas DataFrame as CSV under `artifact_file`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        frame.to_csv(path, index=False)
        parent = str(Path(artifact_file).parent)
        mlflow.log_artifact(str(path), artifact_path=None if parent == "." else parent)


def log_prepared_input(dataset: Any, *, context: str = "training") -> None:
    """Log a prepared dataset as a run input (name, digest, source, counts in its profile)."""
    import mlflow.data
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    meta = MetaDataset(
        source=LocalArtifactDatasetSource(str(Path(dataset.path).resolve())),
        name=dataset_label(dataset),
        digest=dataset.digest,
        schema=None,
    )
    mlflow.log_input(meta, context=context, tags={"counts": json.dumps(dataset.info["counts"])})
    mlflow.set_tag(DATASET_TAG, dataset_label(dataset))


def dataset_label(dataset: Any) -> str:
    """`<source>-<digest>`: the name a prepared dataset goes by in the runs table and in messages."""
    return f"{dataset.source}-{dataset.digest}"


def log_prepare_run(dataset: Any, *, reused: bool, experiment: str | None = None) -> None:
    """A `prepare` run: the dataset as its input, its identity as params, dataset.json and the skip report."""
    import pandas as pd

    from mammo.data.prepare import data_home
    from mammo.data.store import SKIPPED_FILE

    info = dataset.info
    with start_run(run_name=f"prepare-{dataset.source}", experiment=experiment, tags={ENTRY_TAG: "prepare"}):
        log_params({
            "data_source": dataset.source, "data_digest": dataset.digest, "image_size": dataset.image_size,
            "prepared_dir": str(dataset.path), "data_home": str(data_home()), "reused": reused,
            "patients_in_both_splits": "unknown" if dataset.patients_in_both_splits is None
            else dataset.patients_in_both_splits,
        })  # fmt: skip
        log_metrics({"patches": info["count"], "skipped": info["skipped"]})
        log_prepared_input(dataset, context="prepare")
        log_dict(info, "dataset.json")
        skip_report = Path(dataset.path) / SKIPPED_FILE
        if skip_report.is_file():
            log_dataframe(pd.read_csv(skip_report), SKIP_REPORT_FILE)


def log_classifier_evaluation(*, labels: Any, predictions: Any, class_names: tuple[str, str]) -> dict[str, float]:
    """MLflow's standard classifier evaluation of predictions already made (static-prediction mode).

    Adds MLflow's own metrics (precision, recall, F1, confusion counts) and confusion-matrix
    plot to the active run; returns its metrics. Explainability (SHAP) is off: it needs the model.
    The 0/1 labels go in as their class names (positive: `class_names[1]`): MLflow reads integer
    labels as "model type looks like None" and hints about integer columns, on the console both times.
    """
    import numpy as np
    import pandas as pd

    names = np.asarray(class_names)
    frame = pd.DataFrame({
        "label": names[np.asarray(labels, dtype=np.int64).reshape(-1)],
        "prediction": names[np.asarray(predictions, dtype=np.int64).reshape(-1)],  # 0/1 labels, not probabilities
    })  # fmt: skip
    result = mlflow.models.evaluate(
        data=frame, targets="label", predictions="prediction", model_type="classifier",
        evaluator_config={"log_model_explainability": False, "pos_label": class_names[1]},
    )  # fmt: skip
    return {name: float(value) for name, value in result.metrics.items()}


# The Optuna study (mammo.search.study): one parent run per invocation, one nested run per trial.
STUDY_TAG = "optuna_study"  # on the parent and on every trial run: the study's name
TRIAL_NUMBER_TAG = "optuna_trial_number"
TRIAL_STATE_TAG = "optuna_trial_state"  # complete / pruned / failed
BEATS_MODEL5_TAG = "beats_model5"  # true / false / unknown, on the best trial's run and the parent
MCNEMAR_MODEL5 = "mcnemar_p_vs_model5"
OPTUNA_VALUE = "optuna_value"  # a trial's objective: the study metric at the kept (best-val_loss) epoch
PLOT_OPTUNA_HISTORY = "plots/optuna_history.png"
PLOT_OPTUNA_IMPORTANCES = "plots/optuna_importances.png"
PLOT_OPTUNA_PARALLEL = "plots/optuna_parallel.png"
PLOT_OPTUNA_SLICE = "plots/optuna_slice.png"


ERROR_TAG = "mammo.error"  # why a run (a training run, a trial, a dead worker's parent) ended FAILED: one line
TRACEBACK_FILE = "errors/traceback.txt"


def failure_line(error: BaseException) -> str:
    """`ValueError: what went wrong`: the error's first line, passwords hidden, at most 500 characters."""
    return hide_passwords(f"{type(error).__name__}: {error}".strip().splitlines()[0])[:500]


def record_failure(error: BaseException) -> None:
    """The active run's reason (tag, one line) and traceback (artifact): why it ended FAILED."""
    set_tags({ERROR_TAG: failure_line(error)})
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    log_text(hide_passwords(text), TRACEBACK_FILE)


def set_tags(tags: Mapping[str, Any]) -> None:
    mlflow.set_tags({key: str(value) for key, value in tags.items()})


def end_run(*, status: str) -> None:
    """End the active run with another status than FINISHED (a pruned trial's run ends KILLED)."""
    mlflow.end_run(status=status)


def tag_run(run_id: str, tags: Mapping[str, Any], *, metrics: Mapping[str, float] | None = None) -> None:
    """Tags and metrics on a run that may have ended (e.g. the best trial, run by another worker)."""
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_tag(run_id, key, str(value))
    for key, value in (metrics or {}).items():
        client.log_metric(run_id, key, float(value))


def fail_if_running(run_id: str, *, tags: Mapping[str, Any]) -> str | None:
    """Tag a run and end it FAILED if it is still RUNNING (another process's run, e.g. a dead worker's).

    Returns the run's parent run id ("" for a top-level run) when it was ended, None when it had
    already ended. MLflow's errors become a TrackingError.
    """
    from mlflow.exceptions import MlflowException

    from mammo.core.errors import TrackingError

    client = mlflow.MlflowClient()
    try:
        run = client.get_run(run_id)
        if run.info.status != "RUNNING":
            return None
        for key, value in tags.items():
            client.set_tag(run_id, key, str(value))
        client.set_terminated(run_id, status="FAILED")
    except MlflowException as error:
        raise TrackingError(f"run {run_id}: {error.message}") from error
    return run.data.tags.get("mlflow.parentRunId", "")


def load_run_table(run_id: str, artifact_file: str) -> Any:
    """A CSV artifact of a run (e.g. PREDICTIONS_FILE) as a pandas DataFrame."""
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_file, dst_path=tmp)
        return pd.read_csv(path)


# --- reading runs back (promote, evaluate): the MLflow queries, with errors a user can act on ---


def find_experiment_id(name: str | None = None) -> str:
    """The id of the experiment to search, without making it the active one.

    Unlike `use_experiment` it changes no state: inside `mlflow run` the active run belongs to the
    CLI's experiment, and switching the active experiment would stop `start_run` from resuming it.
    """
    from mammo.core.errors import ConfigError

    ready_store()
    if name is None and os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return os.environ["MLFLOW_EXPERIMENT_ID"]
    name = name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        raise ConfigError(
            f"experiment {name!r} does not exist in this tracking store; train first or pass --experiment."
        )
    return experiment.experiment_id


def get_run(run_id: str) -> Any:
    """The run, or a ConfigError naming the id when the store has no such run."""
    from mlflow.exceptions import MlflowException

    from mammo.core.errors import ConfigError

    try:
        return mlflow.get_run(run_id)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise ConfigError(f"run {run_id}: no such run in this tracking store ({error.message}).") from error
        raise


def logged_models(experiment_id: str, *, run_id: str | None = None) -> list[Any]:
    """READY LoggedModels named MODEL_ARTIFACT in the experiment (of one run when given), newest first."""
    filter_string = f"name = '{MODEL_ARTIFACT}'" + (f" AND source_run_id = '{run_id}'" if run_id else "")
    models = mlflow.search_logged_models(
        experiment_ids=[experiment_id], filter_string=filter_string, output_format="list"
    )
    ready = [model for model in models if str(model.status) == "READY"]
    return sorted(ready, key=lambda model: model.creation_timestamp, reverse=True)


def finished_runs(experiment_id: str, *, order_by_metric: str, ascending: bool) -> list[Any]:
    """The experiment's FINISHED runs, best `order_by_metric` first (runs without it last)."""
    return mlflow.search_runs(
        experiment_ids=[experiment_id], filter_string="attributes.status = 'FINISHED'",
        order_by=[f"metrics.`{order_by_metric}` {'ASC' if ascending else 'DESC'}"], output_format="list",
    )  # fmt: skip


def run_dataset_folders(run: Any) -> list[Path]:
    """Local folders of the prepared datasets a run logged as inputs (`log_prepared_input`)."""
    folders = []
    for dataset_input in run.inputs.dataset_inputs if run.inputs else []:
        try:
            uri = json.loads(dataset_input.dataset.source).get("uri", "")
        except (TypeError, ValueError, AttributeError):
            continue
        if uri:
            folders.append(Path(uri.removeprefix("file://")))
    return folders
