"""Promotion: the candidate, its data, the gate and the aliases, put together (no MLflow calls here).

Promotion is a statistical gate, not a leaderboard: the candidate (chosen on validation, never on
test: `candidates`) and the current champion are scored on the same test patches of the
candidate's prepared dataset (`lineage`); the alias moves only when the candidate's gate metric is
strictly better by at least `min_delta` and an exact McNemar test on the paired predictions does
not call it significantly worse (`gate`). Everything from reading the champion to moving the
aliases runs under the registry's promotion lock (`registry`), so concurrent promotions are
serialised and each one is judged against the champion of its moment. Every decision is written on
the model version (tags + the model card as description).

Promotion compares like with like. The target dataset is the one `data` names, else the
champion's, else the experiment's only one (several and no champion: stop and list them); only runs
comparable with it are ranked (`candidates.comparable`). A champion trained on another dataset is
replaced only by a deliberate re-baseline (`rebaseline=True`): both models are scored on the
candidate's test split, and the model card and tags say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mammo import tracking
from mammo.core.errors import ConfigError, RegistryError
from mammo.data.store import PreparedDataset, load_prepared
from mammo.registry import candidates, gate, lineage, versions
from mammo.registry.gate import GateDecision, check_gate_options, gate_decision
from mammo.registry.model_card import model_card
from mammo.serve import serving

RUN_TAG_PARAMS = ("variant", "data_digest", "data_source", "image_size")


@dataclass(frozen=True)
class PromotionResult:
    model_name: str
    alias: str
    version: str
    run_id: str
    decision: GateDecision
    previous_version: str | None  # the champion before the gate ran
    data_path: Path
    registered: bool = True  # False when the run already had a version (reused) or already is the champion
    rebaselined: bool = False  # the champion was trained on another dataset: both scored on this one's test split


def _candidate_tags(candidate: candidates.Candidate) -> dict[str, str]:
    tags = {"run_id": candidate.run_id}
    tags |= {name: candidate.params[name] for name in RUN_TAG_PARAMS if name in candidate.params}
    tags |= {name: f"{candidate.metrics[name]:.6g}" for name in tracking.FINAL_METRICS if name in candidate.metrics}
    return tags


def _score(model_uri: str, patches, who: str):
    """(P(calcification), the model's stored threshold): the gate judges the rule the model is served with."""
    try:
        return serving.score_with_threshold(model_uri, patches)
    except Exception as error:  # any failure to load or score means: no gate, so no promotion
        raise RegistryError(f"cannot score the {who} ({model_uri}): {error}; nothing was promoted.") from error


def _version_data(version) -> dict[str, str]:
    """The params of the run a version came from (data_digest, data_source, protocol), else its tags."""
    try:
        params = dict(tracking.get_run(version.run_id).data.params) if version.run_id else {}
    except ConfigError:  # the run was deleted: the tags promote wrote on the version still say which data
        params = {}
    return params if params.get("data_digest") else dict(version.tags or {})


def _label(params: dict[str, str]) -> str:
    return f"{params.get('data_source', '?')}-{params.get('data_digest') or '?'}"


def _only_dataset(experiment_id: str, select_metric: str) -> str | None:
    """The one dataset the experiment's candidate runs were trained on; several: stop and list them."""
    ranked = candidates.ranked_candidates(experiment_id=experiment_id, select_metric=select_metric)
    by_digest: dict[str, list[candidates.Candidate]] = {}
    for candidate in ranked:
        by_digest.setdefault(candidate.data_digest, []).append(candidate)
    if len(by_digest) <= 1:
        return next(iter(by_digest), None)
    listed = "; ".join(
        f"{digest or '?'} ({runs[0].params.get('data_source', '?')}, {lineage.describe_dataset(digest, runs[0].run_id)}, "
        f"{len(runs)} run{'s' * (len(runs) > 1)})"
        for digest, runs in by_digest.items()
    )
    raise ConfigError(
        f"experiment {experiment_id} holds runs on {len(by_digest)} prepared datasets and there is no champion to "
        f"follow: {listed}. Their scores do not compare: pass --data <prepared folder> to promote within one. "
        "Nothing was registered."
    )


def _find_candidate(
    *, experiment_id: str | None, run_id: str | None, select_metric: str, target: PreparedDataset | None,
    champion_params: dict[str, str] | None, allow_image_split: bool,
) -> candidates.Candidate:  # fmt: skip
    if run_id is not None:
        return candidates.run_candidate(run_id)
    if target is not None:
        digest = target.digest
    elif champion_params and champion_params.get("data_digest"):
        digest = champion_params["data_digest"]
    else:
        digest = _only_dataset(experiment_id, select_metric)
    protocol = candidates.Protocol.of(champion_params) if champion_params else None
    return candidates.find_candidate(
        experiment_id=experiment_id, select_metric=select_metric, digest=digest, protocol=protocol,
        allow_image_split=allow_image_split,
    )  # fmt: skip


def _check_same_data(candidate: candidates.Candidate, dataset: PreparedDataset) -> None:
    if candidate.data_digest and candidate.data_digest != dataset.digest:
        raise ConfigError(
            f"run {candidate.run_id} was trained on dataset {_label(candidate.params)}, but --data {dataset.path} is "
            f"{tracking.dataset_label(dataset)}: a candidate is gated on its own dataset's test split. Drop --data, "
            "or pass a run trained on it. Nothing was registered."
        )


def _needs_rebaseline(
    champion, champion_params: dict[str, str], candidate: candidates.Candidate, dataset
) -> RegistryError:
    return RegistryError(
        f"the {tracking.ALIAS_CHAMPION} (version {champion.version}, run {champion.run_id}) was trained on dataset "
        f"{_label(champion_params)}, the candidate (run {candidate.run_id}) on {tracking.dataset_label(dataset)}: "
        "their figures do not compare. Promote within the champion's dataset (--data <its prepared folder>), or "
        f"pass --rebaseline to score both on the test split of {tracking.dataset_label(dataset)} and replace the "
        "champion if the candidate is better there (the model card records it). Nothing was registered."
    )


def promote(
    *, model_name: str = tracking.MODEL_NAME, run_id: str | None = None, experiment: str | None = None,
    select_metric: str = "val_auc", gate_metric: str = "test_accuracy", data: str | Path | None = None,
    alias: str = tracking.ALIAS_CHAMPION, min_delta: float = 0.0, alpha: float = 0.05,
    lock_wait_s: float = versions.LOCK_WAIT_S, rebaseline: bool = False, allow_image_split: bool = False,
) -> PromotionResult:  # fmt: skip
    """Register (or reuse) the candidate's version, gate it against the `alias` version, move the aliases."""
    check_gate_options(gate_metric=gate_metric, min_delta=min_delta, alpha=alpha)
    versions.check_alias(alias)
    candidates.ranking_metric(select_metric)
    target = load_prepared(data) if data is not None else None
    # First: an unreachable store is said as such, before the registry is read.
    experiment_id = None if run_id is not None else tracking.find_experiment_id(experiment)
    holder = versions.current_version(model_name, alias)  # which dataset to follow; re-read under the lock
    candidate = _find_candidate(
        experiment_id=experiment_id, run_id=run_id, select_metric=select_metric, target=target,
        champion_params=_version_data(holder) if holder is not None else None, allow_image_split=allow_image_split,
    )  # fmt: skip
    run = tracking.get_run(candidate.run_id)
    dataset = target if target is not None else lineage.dataset_of_run(run)
    _check_same_data(candidate, dataset)
    _, patches, labels = lineage.held_out_patches(dataset)
    candidate_probabilities, candidate_threshold = _score(candidate.model_uri, patches, "candidate")  # slow: unlocked
    with versions.promotion_lock(model_name, wait_s=lock_wait_s) as lock:
        versions.finish_alias_moves(model_name, alias)
        champion = versions.current_version(model_name, alias)
        if champion is not None and champion.run_id == candidate.run_id:
            reason = f"run {candidate.run_id} is already the {alias} (version {champion.version}); nothing registered"
            return PromotionResult(
                model_name, alias, str(champion.version), candidate.run_id,
                GateDecision(False, reason, gate_metric, float("nan")), str(champion.version), dataset.path,
                registered=False,
            )  # fmt: skip
        champion_params = _version_data(champion) if champion is not None else {}
        rebaselined = champion is not None and champion_params.get("data_digest") != dataset.digest
        if rebaselined and not rebaseline:
            raise _needs_rebaseline(champion, champion_params, candidate, dataset)
        version, created = versions.register(
            model_name, candidate.model_uri, run_id=candidate.run_id, tags=_candidate_tags(candidate)
        )
        champion_probabilities, champion_threshold = None, candidate_threshold
        if champion is not None:
            champion_probabilities, champion_threshold = _score(
                f"models:/{model_name}/{champion.version}", patches, "champion"
            )
        decision = gate_decision(
            labels=labels, candidate_probabilities=candidate_probabilities,
            champion_probabilities=champion_probabilities, gate_metric=gate_metric, min_delta=min_delta, alpha=alpha,
            candidate_threshold=candidate_threshold, champion_threshold=champion_threshold,
        )  # fmt: skip
        context = {"gate_data_digest": dataset.digest, "gate_test_patches": str(len(labels))}
        if champion is not None:
            context["gate_champion_version"] = str(champion.version)
            context["gate_champion_data_digest"] = champion_params.get("data_digest", "")
        if rebaselined:
            context["gate_rebaseline"] = "true"
        card = model_card(
            model_name=model_name, version=str(version.version), alias=alias, run_id=candidate.run_id,
            experiment_id=run.info.experiment_id, params=candidate.params, metrics=candidate.metrics,
            data=dataset.info, decision_status=decision.status, decision_reason=decision.reason,
            p_value=decision.p_value, against=f"version {champion.version}" if champion is not None else None,
            rebaseline_from=_label(champion_params) if rebaselined else None,
        )  # fmt: skip
        lock.confirm()  # still ours after the champion's scoring: else nothing is written
        versions.set_version_tags(model_name, str(version.version), {**decision.tags(), **context}, description=card)
        if decision.promoted:
            versions.move_alias(model_name, alias, str(version.version), str(champion.version) if champion else None)
    return PromotionResult(
        model_name, alias, str(version.version), candidate.run_id, decision,
        str(champion.version) if champion is not None else None, dataset.path, registered=created,
        rebaselined=rebaselined,
    )  # fmt: skip


def log_decision(result: PromotionResult, *, experiment: str | None, min_delta: float, alpha: float) -> None:
    """A `promote` run records the decision next to the training runs (and fills the run `mlflow run` opened)."""
    decision = result.decision
    tags = {tracking.ENTRY_TAG: "promote", gate.STATUS_TAG: decision.status}
    with tracking.start_run(run_name=f"promote-v{result.version}", experiment=experiment, tags=tags):
        tracking.log_params({
            "model_name": result.model_name, "alias": result.alias, "candidate_run_id": result.run_id,
            "version": result.version, "registered": result.registered, "gate_metric": decision.gate_metric,
            "min_delta": min_delta, "alpha": alpha, "prepared_dir": str(result.data_path),
            "rebaseline": result.rebaselined,
        })  # fmt: skip
        scores = {"gate_candidate_score": decision.candidate_score, "gate_champion_score": decision.champion_score,
                  "mcnemar_p": decision.p_value}  # fmt: skip
        tracking.log_metrics({name: value for name, value in scores.items() if value is not None and value == value})
