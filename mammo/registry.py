"""Model registry: register a run's model, gate it against the champion, move the aliases.

Promotion is a statistical gate, not a leaderboard: the candidate (chosen on validation, never
on test) and the current champion are scored on the same test patches; the champion alias moves
only when the candidate's gate metric is strictly better by at least `min_delta` and an exact
McNemar test on the paired predictions does not call it significantly worse. Every decision is
written on the model version (tags + description), so the registry UI tells why a version is or
is not the champion. Stages are deprecated in MLflow 3 and never used; aliases carry the state:
`champion`, `challenger` (the latest candidate) and `previous-champion`.

The registry calls (register, aliases, version tags) live here rather than in `tracking`: this
module *is* the registry concern, and `tracking` keeps the run-logging names it shares with it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from mammo import serving, tracking
from mammo.data.prepare import DATA_ROOT
from mammo.data.store import INFO_FILE, PreparedDataset, load_prepared
from mammo.errors import ConfigError, DataError
from mammo.gate import GateDecision, check_gate_options, gate_decision, lower_is_better

RUN_TAG_PARAMS = ("variant", "data_digest", "data_source", "image_size")
SCORE_BATCH = 256


def previous_alias(alias: str) -> str:
    """`champion` → `previous-champion` (tracking.ALIAS_PREVIOUS), any other alias likewise."""
    return tracking.ALIAS_PREVIOUS if alias == tracking.ALIAS_CHAMPION else f"previous-{alias}"


@dataclass(frozen=True)
class Candidate:
    """A finished run with a logged model: what gets registered."""

    run_id: str
    model_uri: str
    params: dict[str, str]
    metrics: dict[str, float]


# --- finding the candidate and its data -------------------------------------------------------


def logged_model_uri(run_id: str) -> str | None:
    """`models:/<model_id>` of the newest READY model named `model` that the run logged, else None."""
    run = mlflow.get_run(run_id)
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"name = '{tracking.MODEL_ARTIFACT}' AND source_run_id = '{run_id}'",
        output_format="list",
    )
    ready = [model for model in models if str(model.status) == "READY"]
    return max(ready, key=lambda model: model.creation_timestamp).model_uri if ready else None


def _candidate(run: Run, model_uri: str) -> Candidate:
    return Candidate(run.info.run_id, model_uri, dict(run.data.params), dict(run.data.metrics))


def experiment_id(name: str | None = None) -> str:
    """The id of the experiment to search, without making it the active one.

    Unlike `tracking.use_experiment` it changes no state: inside `mlflow run` the active run
    belongs to the CLI's experiment, and switching the active experiment would stop
    `tracking.start_run` from resuming that run.
    """
    if name is None and os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return os.environ["MLFLOW_EXPERIMENT_ID"]
    name = name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or tracking.EXPERIMENT
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        raise ConfigError(
            f"experiment {name!r} does not exist in this tracking store; train first or pass --experiment."
        )
    return experiment.experiment_id


def find_candidate(*, experiment_id: str, select_metric: str = "val_auc", run_id: str | None = None) -> Candidate:
    """The given run, or the best FINISHED run of the experiment by `select_metric` among runs with a model.

    Ranked on a validation metric (higher is better, except losses such as val_loss): choosing
    the candidate on test would let the gate's own test patches pick the model they then judge.
    """
    if select_metric.startswith("test"):
        raise ConfigError(
            f"--select-metric {select_metric} is a test metric; pick the candidate on validation (e.g. val_auc, "
            "val_accuracy, val_loss) so the gate's test patches judge a model they did not choose."
        )
    if run_id is not None:
        try:
            run = mlflow.get_run(run_id)
        except MlflowException as exc:
            raise ConfigError(f"--run-id {run_id}: no such run in this tracking store ({exc.message}).") from exc
        uri = logged_model_uri(run_id)
        if uri is None:
            raise ConfigError(f"run {run_id} logged no model named '{tracking.MODEL_ARTIFACT}'; pass a training run.")
        return _candidate(run, uri)
    models = mlflow.search_logged_models(
        experiment_ids=[experiment_id], filter_string=f"name = '{tracking.MODEL_ARTIFACT}'", output_format="list"
    )
    with_model = {model.source_run_id for model in models if str(model.status) == "READY"}
    runs = mlflow.search_runs(
        experiment_ids=[experiment_id], filter_string="attributes.status = 'FINISHED'",
        order_by=[f"metrics.`{select_metric}` {'ASC' if lower_is_better(select_metric) else 'DESC'}"],
        output_format="list",
    )  # fmt: skip
    for run in runs:
        if run.info.run_id in with_model and np.isfinite(run.data.metrics.get(select_metric, np.nan)):
            return _candidate(run, logged_model_uri(run.info.run_id))  # type: ignore[arg-type]
    raise ConfigError(
        f"no finished run in experiment {experiment_id} logged a model and the metric {select_metric!r}; "
        "train one first (python -m entrypoints.train), or pass --run-id / --select-metric."
    )


def _digest_at(folder: Path) -> str | None:
    try:
        return str(json.loads((folder / INFO_FILE).read_text()).get("digest"))
    except (OSError, ValueError):
        return None


def _input_folders(run: Run) -> list[Path]:
    folders = []
    for dataset_input in run.inputs.dataset_inputs if run.inputs else []:
        try:
            uri = json.loads(dataset_input.dataset.source).get("uri", "")
        except (TypeError, ValueError, AttributeError):
            continue
        if uri:
            folders.append(Path(uri.removeprefix("file://")))
    return folders


def find_prepared(digest: str, *, run: Run | None = None, roots: tuple[Path, ...] = (DATA_ROOT / "prepared",)) -> Path:
    """The prepared dataset folder whose content digest is `digest`.

    Looks at the run's dataset inputs, its `prepared_dir` param, then every `<root>/*` folder,
    and trusts a folder only if its dataset.json carries the same digest.
    """
    looked: list[Path] = []
    if run is not None:
        looked += _input_folders(run)
        if run.data.params.get("prepared_dir"):
            looked.append(Path(run.data.params["prepared_dir"]))
    for root in roots:
        looked += sorted(path.parent for path in Path(root).glob(f"*/{INFO_FILE}"))
    for folder in looked:
        if _digest_at(folder) == digest:
            return folder
    where = ", ".join(str(path) for path in looked) or "nowhere (no dataset inputs, no data/prepared/*)"
    raise DataError(
        f"no prepared dataset with digest {digest} found (looked in {where}). Pass --data <prepared folder>, "
        "or prepare the same source with the same options again (python -m entrypoints.prepare ...)."
    )


def _run_of_model_uri(model_uri: str) -> str | None:
    """The run that logged the model a URI points at, when the URI names one."""
    client = MlflowClient()
    if match := re.fullmatch(r"runs:/([^/]+)/.*", model_uri):
        return match.group(1)
    if match := re.fullmatch(r"models:/(m-[0-9a-f]+)", model_uri):
        return mlflow.get_logged_model(match.group(1)).source_run_id
    if match := re.fullmatch(r"models:/([^/@]+)@(.+)", model_uri):
        return client.get_model_version_by_alias(match.group(1), match.group(2)).run_id
    if match := re.fullmatch(r"models:/([^/@]+)/(\d+)", model_uri):
        return client.get_model_version(match.group(1), match.group(2)).run_id
    return None


def dataset_for_model(model_uri: str, data: str | Path | None = None) -> PreparedDataset:
    """`data` if given, else the prepared dataset the model was trained on (its run's data_digest)."""
    if data is not None:
        return load_prepared(data)
    run_id = _run_of_model_uri(model_uri)
    digest = mlflow.get_run(run_id).data.params.get("data_digest") if run_id else None
    if not digest:
        raise ConfigError(f"cannot tell which data {model_uri} was trained on (no data_digest param); pass --data.")
    return load_prepared(find_prepared(digest, run=mlflow.get_run(run_id)))  # type: ignore[arg-type]


def held_out_patches(dataset: PreparedDataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices, patches (n, S, S) uint16, labels) of the official test split."""
    indices = dataset.split_indices("test")
    if len(indices) == 0:
        raise DataError(f"{dataset.path} has no test patches; the gate needs the official test split.")
    return indices, np.asarray(dataset.patches[indices]), dataset.labels[indices]


def probabilities_of(output: Any) -> np.ndarray:
    """P(calcification) as a flat float array from whatever the pyfunc returned."""
    if isinstance(output, pd.DataFrame):
        column = serving.OUTPUT_COLUMN
        output = output[column] if column in output.columns else output.iloc[:, 0]
    return np.asarray(output, dtype=np.float64).reshape(-1)


def predict_batches(model: Any, patches: np.ndarray) -> np.ndarray:
    """A loaded pyfunc's P(calcification) for uint16 patches (n, S, S), SCORE_BATCH at a time (bounded memory)."""
    batches = [
        probabilities_of(model.predict(patches[start : start + SCORE_BATCH]))
        for start in range(0, len(patches), SCORE_BATCH)
    ]
    return np.concatenate(batches) if batches else np.zeros(0)


def score_model(model_uri: str, patches: np.ndarray) -> np.ndarray:
    """Load any pyfunc model URI and predict P(calcification) for uint16 patches (n, S, S)."""
    return predict_batches(mlflow.pyfunc.load_model(model_uri), patches)


# --- registering and promoting ----------------------------------------------------------------


def _candidate_tags(candidate: Candidate) -> dict[str, str]:
    tags = {"run_id": candidate.run_id}
    tags |= {name: candidate.params[name] for name in RUN_TAG_PARAMS if name in candidate.params}
    metric_names = ("val_auc", *tracking.FINAL_METRICS)
    tags |= {name: f"{candidate.metrics[name]:.6g}" for name in metric_names if name in candidate.metrics}
    return tags


def register_candidate(candidate: Candidate, *, model_name: str = tracking.MODEL_NAME) -> ModelVersion:
    """A new version of `model_name` from the candidate's model, tagged and aliased `challenger`."""
    version = mlflow.register_model(candidate.model_uri, model_name, tags=_candidate_tags(candidate))
    MlflowClient().set_registered_model_alias(model_name, tracking.ALIAS_CHALLENGER, version.version)
    return version


def current_version(model_name: str, alias: str) -> ModelVersion | None:
    try:
        return MlflowClient().get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None  # no such registered model or alias yet


@dataclass(frozen=True)
class PromotionResult:
    model_name: str
    alias: str
    version: str
    run_id: str
    decision: GateDecision
    previous_version: str | None  # the champion before the gate ran
    data_path: Path
    registered: bool = True  # False when the candidate's run already is the champion


def promote(
    *, model_name: str = tracking.MODEL_NAME, run_id: str | None = None, experiment: str | None = None,
    select_metric: str = "val_auc", gate_metric: str = "test_accuracy", data: str | Path | None = None,
    alias: str = tracking.ALIAS_CHAMPION, min_delta: float = 0.0, alpha: float = 0.05,
) -> PromotionResult:  # fmt: skip
    """Register the candidate, gate it against the `alias` version on the same test patches, move aliases."""
    check_gate_options(gate_metric=gate_metric, min_delta=min_delta, alpha=alpha)
    candidate = find_candidate(experiment_id=experiment_id(experiment), select_metric=select_metric, run_id=run_id)
    if data is None:
        if "data_digest" not in candidate.params:
            raise ConfigError(f"run {candidate.run_id} has no data_digest param; pass --data <prepared folder>.")
        data = find_prepared(candidate.params["data_digest"], run=mlflow.get_run(candidate.run_id))
    dataset = load_prepared(data)
    _, patches, labels = held_out_patches(dataset)
    champion = current_version(model_name, alias)
    if champion is not None and champion.run_id == candidate.run_id:
        decision = GateDecision(
            False, f"run {candidate.run_id} is already the {alias} (version {champion.version}); nothing registered",
            gate_metric, float("nan"),
        )  # fmt: skip
        return PromotionResult(
            model_name, alias, str(champion.version), candidate.run_id, decision, str(champion.version), dataset.path,
            registered=False,
        )  # fmt: skip
    version = register_candidate(candidate, model_name=model_name)
    champion_probabilities = None
    if champion is not None:
        champion_probabilities = score_model(f"models:/{model_name}/{champion.version}", patches)
    decision = gate_decision(
        labels=labels, candidate_probabilities=score_model(candidate.model_uri, patches),
        champion_probabilities=champion_probabilities, gate_metric=gate_metric, min_delta=min_delta, alpha=alpha,
    )  # fmt: skip
    context = {"gate_data_digest": dataset.digest, "gate_test_patches": str(len(labels))}
    if champion is not None:
        context["gate_champion_version"] = str(champion.version)
    _record(model_name, version.version, decision, context, alias=alias)
    if decision.promoted:
        client = MlflowClient()
        if champion is not None:
            client.set_registered_model_alias(model_name, previous_alias(alias), champion.version)
        client.set_registered_model_alias(model_name, alias, version.version)
    return PromotionResult(
        model_name, alias, str(version.version), candidate.run_id, decision, str(champion.version) if champion else None,
        dataset.path,
    )  # fmt: skip


def _record(model_name: str, version: str, decision: GateDecision, context: dict[str, str], *, alias: str) -> None:
    client = MlflowClient()
    for key, value in {**decision.tags(), **context}.items():
        client.set_model_version_tag(model_name, version, key, value)
    against = f"version {context['gate_champion_version']}" if "gate_champion_version" in context else "none"
    description = (
        f"{decision.status.upper()} as {alias} (compared with: {against}) on {context['gate_test_patches']} test "
        f"patches of prepared dataset {context['gate_data_digest']}. {decision.reason}."
    )
    client.update_model_version(model_name, version, description=description)
