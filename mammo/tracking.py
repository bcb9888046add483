"""Every MLflow name and call in one place, so the UI columns never drift.

Tracking URI comes from MLflow's usual settings (MLFLOW_TRACKING_URI; default
`sqlite:///mlflow.db` in the working directory). Inside `mlflow run`, MLFLOW_RUN_ID names the
run the project opened; `start_run` reuses it and nested runs get an explicit parent.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow

EXPERIMENT = "mammo-mass-calc"
MODEL_NAME = "mammo-cnn"
MODEL_ARTIFACT = "model"
ALIAS_CHAMPION = "champion"
ALIAS_CHALLENGER = "challenger"
ALIAS_PREVIOUS = "previous-champion"

PARAM_NAMES = (
    "variant", "filters", "dense_units", "dropout", "l2", "learning_rate", "lr_decay",
    "batch_size", "epochs", "patience", "augment", "image_size", "split_by", "val_fraction",
    "seed", "data_source", "data_digest",
)  # fmt: skip
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "val_auc", "learning_rate")
TEST_METRICS = (
    "test_accuracy", "test_accuracy_ci_low", "test_accuracy_ci_high", "test_auc", "test_loss",
    "test_balanced_accuracy", "test_recall_mass", "test_recall_calc", "test_wrong", "test_worst",
    "test_ece",
)  # fmt: skip
FINAL_METRICS = (*TEST_METRICS, "val_accuracy", "best_epoch")
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
MCNEMAR_PREFIX = "mcnemar_p_"  # + variant: McNemar p vs model5, logged on the train_all parent run


def use_experiment(name: str | None = None) -> str:
    """Select (creating if needed) the experiment; returns its id.

    Inside `mlflow run` the run already belongs to the experiment the CLI chose, so the
    experiment named by MLFLOW_EXPERIMENT_ID / MLFLOW_EXPERIMENT_NAME wins over the default.
    """
    env_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
    if name is None and env_id:
        mlflow.set_experiment(experiment_id=env_id)
        return env_id
    experiment = mlflow.set_experiment(name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT)
    return experiment.experiment_id


@contextmanager
def start_run(
    *, run_name: str | None = None, experiment: str | None = None, nested: bool = False, parent_run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator[mlflow.ActiveRun]:  # fmt: skip
    """Open a run, or resume the one `mlflow run` created (MLFLOW_RUN_ID)."""
    active = mlflow.active_run()
    if active is not None and not nested and parent_run_id is None:
        yield active
        return
    if not nested and parent_run_id is None and os.environ.get("MLFLOW_RUN_ID"):
        # `mlflow run` created the run; its id is in the environment. Popped, as MLflow does when it
        # reads it itself: left there, the next nested start_run would resume this run, not make a child.
        with mlflow.start_run(run_id=os.environ.pop("MLFLOW_RUN_ID"), tags=dict(tags or {})) as run:
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
    ) as run:
        yield run


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
    booleans = {"true": "1.0", "false": "0.0", "yes": "1.0", "no": "0.0"}
    first, second = booleans.get(first.lower(), first), booleans.get(second.lower(), second)
    try:
        return float(first) == float(second)
    except ValueError:
        return False


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
        name=f"{dataset.source}-{dataset.digest}",
        digest=dataset.digest,
        schema=None,
    )
    mlflow.log_input(meta, context=context, tags={"counts": json.dumps(dataset.info["counts"])})


def log_classifier_evaluation(*, labels: Any, predictions: Any) -> dict[str, float]:
    """MLflow's standard classifier evaluation of predictions already made (static-prediction mode).

    Adds MLflow's own metrics (precision, recall, F1, confusion counts) and confusion-matrix
    plot to the active run; returns its metrics. Explainability (SHAP) is off: it needs the model.
    """
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame({
        "label": np.asarray(labels, dtype=np.int64).reshape(-1),
        "prediction": np.asarray(predictions, dtype=np.int64).reshape(-1),  # 0/1 labels, not probabilities
    })  # fmt: skip
    result = mlflow.models.evaluate(
        data=frame, targets="label", predictions="prediction", model_type="classifier",
        evaluator_config={"log_model_explainability": False, "pos_label": 1},
    )  # fmt: skip
    return {name: float(value) for name, value in result.metrics.items()}


# The Optuna study (mammo.study): one parent run per invocation, one nested run per trial.
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


def load_run_table(run_id: str, artifact_file: str) -> Any:
    """A CSV artifact of a run (e.g. PREDICTIONS_FILE) as a pandas DataFrame."""
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_file, dst_path=tmp)
        return pd.read_csv(path)
