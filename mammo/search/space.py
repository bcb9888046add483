"""Optuna side of the search beyond Model 5: the space, the storage, the sampler and the pruner.

No MLflow and no Keras here (`mammo.search.study` runs the trials as nested MLflow runs, and
`mammo.search.study_report` summarises them), so everything in this module is testable with a
pure-Python objective.

Storage forms, chosen by the shape of `--storage`:
    sqlite:///optuna.db                one process (the default; `optuna-dashboard sqlite:///optuna.db`)
    journal:./optuna.journal, *.journal, *.log
                                       several processes on one machine (a lock-protected append-only file)
    postgresql://user@host/db          many machines; any SQLAlchemy URL works (mysql+pymysql://…)
Leave the password out of a PostgreSQL URL: libpq reads it from PGPASSWORD or ~/.pgpass, and a URL
that carries one ends up in shell history and, under `mlflow run`, in the tracking store.
RDB storages get heartbeats, and a trial whose worker died (no heartbeat for `grace_period`
seconds) is marked failed and re-queued with the same parameters, up to `max_retry` times
(`mammo.search.workers` for the budget shared by several workers and for dead workers' trials).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.exceptions import DuplicatedStudyError, ExperimentalWarning
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from mammo.core.errors import ConfigError
from mammo.model.feature_maps import max_blocks, min_image_size
from mammo.search.workers import StaleTrialCallback

DEFAULT_STUDY_NAME = "mammo-model5-search"
DEFAULT_STORAGE = "sqlite:///optuna.db"
DEFAULT_METRIC = "val_auc"
SAMPLERS = ("tpe", "random", "gp")
PRUNERS = ("median", "hyperband", "none")
# Validation metrics only: selecting on a test metric would leak the test set into the model choice.
METRIC_DIRECTIONS = {"val_auc": "maximize", "val_accuracy": "maximize", "val_loss": "minimize"}
JOURNAL_PREFIX = "journal:"
JOURNAL_SUFFIXES = (".journal", ".log")

HEARTBEAT_INTERVAL = 60  # seconds between a running trial's heartbeats (RDB storages)
GRACE_PERIOD = 180  # a RUNNING trial silent this long is stale: three missed heartbeats
MAX_RETRY = 3  # times a stale trial is re-queued with the same parameters

REFERENCE_ATTR = "reference"  # user attr of the enqueued Model 5 trial (copied onto its retries)
REFERENCE_VALUE = "model5"
REFERENCE_WAIT_S = 5.0  # how long a worker that loads a brand-new study waits for its creator to enqueue Model 5
STUDY_ATTR_PREFIX = "mammo_"  # study user attrs that must agree when a study is resumed

# The space beyond Model 5; each range contains Model 5's own value (marked) so it can be enqueued.
DROPOUT_RANGE = (0.0, 0.7)  # model5: 0.5
L2_RANGE = (1e-6, 1e-2)  # log; model5: 5e-5
BASE_FILTERS = (16, 64, 16)  # low, high, step; model5: 32 (then doubling 64-128-256)
BLOCKS = (3, 5)  # Conv2D+MaxPool blocks; model5: 4
DENSE_UNITS = (16, 128, 16)  # model5: 48
LEARNING_RATE_RANGE = (1e-4, 1e-2)  # log; model5: 1e-3
BATCH_SIZES = (32, 64, 128)  # model5: 128 as published, 32 under the quick schedule
AUGMENT_RANGE = (0.0, 1.5)  # 0 off, 1.0 the published strength; model5: 1.0
# Backbones, on request (--backbones): `backbone` picks the scratch family or a pretrained backbone;
# a backbone trial draws its head's dropout/learning rate/batch/augmentation and its fine-tuning.
SCRATCH = "scratch"
UNFREEZE_BLOCKS = (0, 6)  # top blocks trained in phase 2 (0 = head only)
FINETUNE_LEARNING_RATE_RANGE = (1e-6, 1e-4)  # log; the Keras guide: 1e-5


def metric_direction(metric: str) -> str:
    """'maximize' or 'minimize' for a validation metric; a ConfigError for anything else."""
    if metric.startswith("test_"):
        raise ConfigError(
            f"--metric {metric} is a test metric: choosing hyperparameters on the test set leaks it into the "
            f"model choice and makes the final test score optimistic. Use one of {', '.join(METRIC_DIRECTIONS)}."
        )
    if metric not in METRIC_DIRECTIONS:
        raise ConfigError(f"--metric must be one of {', '.join(METRIC_DIRECTIONS)}; got {metric!r}.")
    return METRIC_DIRECTIONS[metric]


def suggest_params(trial: optuna.Trial, *, image_size: int, backbones: Sequence[str] = ()) -> dict[str, Any]:
    """Draw one point of the space; depth is capped so the feature map never shrinks below 1×1.

    With `backbones`, `backbone` is drawn first among the scratch family and those; a backbone
    trial then draws only what a backbone has (no filters, blocks, dense units or L2).
    """
    if backbones:
        backbone = trial.suggest_categorical("backbone", (SCRATCH, *backbones))
        if backbone != SCRATCH:
            return {
                "backbone": backbone,
                "dropout": trial.suggest_float("dropout", *DROPOUT_RANGE),
                "learning_rate": trial.suggest_float("learning_rate", *LEARNING_RATE_RANGE, log=True),
                "batch_size": trial.suggest_categorical("batch_size", BATCH_SIZES),
                "augment": trial.suggest_float("augment", *AUGMENT_RANGE),
                "unfreeze_blocks": trial.suggest_int("unfreeze_blocks", *UNFREEZE_BLOCKS),
                "finetune_learning_rate": trial.suggest_float(
                    "finetune_learning_rate", *FINETUNE_LEARNING_RATE_RANGE, log=True
                ),
            }
        return {"backbone": SCRATCH, **_suggest_scratch(trial, image_size=image_size)}
    return _suggest_scratch(trial, image_size=image_size)


def _suggest_scratch(trial: optuna.Trial, *, image_size: int) -> dict[str, Any]:
    deepest = min(BLOCKS[1], max_blocks(image_size))
    if deepest < BLOCKS[0]:
        raise ConfigError(
            f"--image-size {image_size} is too small for {BLOCKS[0]} convolution blocks; use at least "
            f"{min_image_size(BLOCKS[0])} pixels."
        )
    return {
        "dropout": trial.suggest_float("dropout", *DROPOUT_RANGE),
        "l2": trial.suggest_float("l2", *L2_RANGE, log=True),
        "base_filters": trial.suggest_int("base_filters", BASE_FILTERS[0], BASE_FILTERS[1], step=BASE_FILTERS[2]),
        "blocks": trial.suggest_int("blocks", BLOCKS[0], deepest),
        "dense_units": trial.suggest_int("dense_units", DENSE_UNITS[0], DENSE_UNITS[1], step=DENSE_UNITS[2]),
        "learning_rate": trial.suggest_float("learning_rate", *LEARNING_RATE_RANGE, log=True),
        "batch_size": trial.suggest_categorical("batch_size", BATCH_SIZES),
        "augment": trial.suggest_float("augment", *AUGMENT_RANGE),
    }


def filters_for(base_filters: int, blocks: int) -> tuple[int, ...]:
    """Filter counts that double per block, as in Models 3–5 (32 × 4 → 32-64-128-256)."""
    return tuple(int(base_filters) * 2**block for block in range(int(blocks)))


def space_params(config_params: Mapping[str, Any]) -> dict[str, Any]:
    """A config's point in the space (filters 32-64-128-256 → base_filters 32, blocks 4)."""
    filters = tuple(int(f) for f in config_params["filters"])
    if filters != filters_for(filters[0], len(filters)):
        raise ConfigError(f"filters {filters} do not double per block, so they are not a point of the search space.")
    return {
        "dropout": float(config_params["dropout"]),
        "l2": float(config_params["l2"]),
        "base_filters": filters[0],
        "blocks": len(filters),
        "dense_units": int(config_params["dense_units"]),
        "learning_rate": float(config_params["learning_rate"]),
        "batch_size": int(config_params["batch_size"]),
        "augment": float(config_params["augment"]),
    }


def config_overrides(params: Mapping[str, Any]) -> dict[str, Any]:
    """Trial params → keyword overrides for `variants.make_config` (the variant is `params["backbone"]`'s)."""
    overrides = {key: value for key, value in params.items() if key not in ("base_filters", "blocks", "backbone")}
    if params.get("backbone", SCRATCH) == SCRATCH:
        overrides["filters"] = filters_for(params["base_filters"], params["blocks"])
    return overrides


# --- storage, sampler, pruner -------------------------------------------------------------------


def storage_kind(storage: str) -> str:
    """'journal', 'rdb' or a ConfigError saying which forms are understood."""
    if storage.startswith(JOURNAL_PREFIX) or storage.endswith(JOURNAL_SUFFIXES):
        return "journal"
    if "://" in storage:
        return "rdb"
    raise ConfigError(
        f"--storage {storage!r} is neither an RDB URL nor a journal file. Use sqlite:///optuna.db (one process), "
        "journal:./optuna.journal or a path ending in .journal/.log (several processes on one machine), or "
        "postgresql://user:password@host/db (many machines)."
    )


def describe_storage(storage: str) -> str:
    """The storage string with any password hidden, safe to log as an MLflow param."""
    if storage_kind(storage) == "rdb":
        from sqlalchemy.engine import make_url

        return make_url(rdb_url(storage)).render_as_string(hide_password=True)
    return storage


def storage_has_password(storage: str) -> bool:
    """Whether an RDB URL carries a password (postgresql://user:secret@host/db)."""
    if storage_kind(storage) != "rdb":
        return False
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(rdb_url(storage)).password is not None
    except ArgumentError:
        return False


def password_warning(storage: str) -> str | None:
    """The warning for a storage URL that carries a password (None when it carries none)."""
    if not storage_has_password(storage):
        return None
    return (
        "--storage carries a password, which ends up in shell history and, under `mlflow run`, in the tracking "
        "store; leave it out of the URL and set PGPASSWORD or ~/.pgpass instead."
    )


def rdb_url(storage: str) -> str:
    """A PostgreSQL URL as users write it, for SQLAlchemy: `postgres://` → `postgresql://`, and the
    psycopg2 driver named when psycopg 3 is missing.

    SQLAlchemy 2.1 maps a plain `postgresql://` to psycopg 3 (the `team` extra); with only
    psycopg2-binary installed (the `postgres` extra) the same URL still works. A URL that names its
    driver (`postgresql+psycopg2://`) is left as it is; SQLAlchemy refuses Heroku's `postgres://`.
    """
    import importlib.util

    scheme, _, rest = storage.partition("://")
    if scheme not in ("postgresql", "postgres"):
        return storage
    only_psycopg2 = importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None
    return f"postgresql+psycopg2://{rest}" if only_psycopg2 else f"postgresql://{rest}"


def storage_file(storage: str) -> Path | None:
    """The file behind a journal or SQLite storage (None for a server or an in-memory database)."""
    if storage_kind(storage) == "journal":
        return Path(storage.removeprefix(JOURNAL_PREFIX)).expanduser()
    if storage.startswith("sqlite:///") and storage != "sqlite:///:memory:":
        return Path(storage.removeprefix("sqlite:///")).expanduser()
    return None


def open_storage(
    storage: str, *, heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int = GRACE_PERIOD,
    max_retry: int = MAX_RETRY, on_stale: Callable[[FrozenTrial], None] | None = None,
) -> BaseStorage:  # fmt: skip
    """The Optuna storage for a `--storage` string (forms in the module docstring).

    `on_stale(trial)` runs after a dead worker's trial is failed and re-queued (RDB storages).
    """
    if storage_kind(storage) == "journal":
        path = storage_file(storage)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if heartbeat_interval <= 0 or grace_period <= heartbeat_interval:
        raise ConfigError(
            f"heartbeat interval {heartbeat_interval}s and grace period {grace_period}s: the interval must be "
            "positive and the grace period longer than it (three intervals is a good choice)."
        )
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if storage.startswith("sqlite"):
        # Heartbeats write from a second thread: wait for SQLite's lock instead of failing.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeat_interval is "experimental" since 2.9
        try:
            return RDBStorage(
                rdb_url(storage), engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                heartbeat_stale_trial_callback=StaleTrialCallback(max_retry=max_retry, on_stale=on_stale),
            )  # fmt: skip
        except ImportError as error:
            raise ConfigError(f"--storage {storage.split('://')[0]}://… needs its database driver: {error}") from error


class PerTrialSeedSampler(BaseSampler):
    """Re-creates the wrapped sampler before each trial with a seed drawn from (seed, trial number).

    Why: workers that share a storage each start a seeded sampler from the same state and would
    propose the same configurations. Keyed by the trial number, which the storage makes unique
    across workers, every trial's random draws are reproducible and differ between trials.
    """

    def __init__(self, make: Callable[[int], BaseSampler], *, seed: int) -> None:
        self._make = make
        self._seed = seed
        self._sampler = make(seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        seed = int(np.random.SeedSequence([self._seed, trial.number]).generate_state(1)[0])
        self._sampler = self._make(seed)
        self._sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._sampler.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler.reseed_rng()


def _tpe(seed: int) -> BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        # constant_liar: running trials count as bad guesses, so parallel workers spread out.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)


def _gp(seed: int) -> BaseSampler:
    return optuna.samplers.GPSampler(seed=seed)


def make_sampler(name: str, *, seed: int) -> BaseSampler:
    """tpe (default, seeded), random or gp, each reseeded per trial number (see PerTrialSeedSampler)."""
    if name == "gp":
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            raise ConfigError("--sampler gp needs PyTorch (pip install torch); use --sampler tpe or random.")
    makers: dict[str, Callable[[int], BaseSampler]] = {
        "tpe": _tpe,
        "random": lambda s: optuna.samplers.RandomSampler(seed=s),
        "gp": _gp,
    }
    if name not in makers:
        raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)}; got {name!r}.")
    return PerTrialSeedSampler(makers[name], seed=seed)


def make_pruner(name: str, *, epochs: int) -> optuna.pruners.BasePruner:
    """median (default), hyperband or none, sized for short studies.

    Optuna's MedianPruner waits for 5 finished trials by default, so a 6-trial study would prune
    at most once. Here it starts after 2 (Model 5 and one more) and judges from the second epoch
    on (a warm-up of a fifth of the epochs, at least one): a trial below the median of earlier
    trials at the same epoch stops there. A fifth rather than a third: every trial pays ~5 s of
    set-up (model build, tracing) before its first epoch, so the earlier a doomed trial stops the
    more pruning saves (bench/study.py; docs/performance.md).
    """
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=max(1, epochs // 5))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1), reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"--pruner must be one of {', '.join(PRUNERS)}; got {name!r}.")


# --- the study ----------------------------------------------------------------------------------


def load_study(
    *, study_name: str, storage: str | BaseStorage, metric: str, sampler: BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None, attrs: Mapping[str, Any] | None = None,
    reference_params: Mapping[str, Any] | None = None,
) -> optuna.Study:  # fmt: skip
    """Create the study, or continue it when it exists (same name and storage).

    `attrs` (epochs, image size, data digest…) are stored on creation and must match on resume, so
    trials trained under different conditions never end up ranked together. `reference_params`
    (Model 5's point) is enqueued as trial 0 by the process that creates the study, straight after
    creating it (creation is atomic in every storage, so parallel workers never both enqueue it); a
    worker that loads the study in that instant, before trial 0 exists, waits for it (up to
    `REFERENCE_WAIT_S`) rather than starting a trial of its own first. A resumed study that has
    trials but no Model 5 trial gets it enqueued; resuming never enqueues it twice.
    """
    direction = metric_direction(metric)
    try:
        study = optuna.create_study(
            study_name=study_name, storage=storage, sampler=sampler, pruner=pruner, direction=direction
        )
        created = True
    except DuplicatedStudyError:
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
        created = False
    if created and reference_params is not None:
        study.enqueue_trial(dict(reference_params), user_attrs={REFERENCE_ATTR: REFERENCE_VALUE})
    if study.direction.name.lower() != direction:
        raise ConfigError(
            f"study {study_name!r} was created to {study.direction.name.lower()} its metric, but --metric {metric} "
            f"needs {direction}; use the study's metric or a new --study-name."
        )
    _check_study_attrs(study, {"metric": metric, **(attrs or {})})
    if not created and reference_params is not None:
        _wait_for_first_trial(study)
        if _lacks_reference(study):
            study.enqueue_trial(dict(reference_params), user_attrs={REFERENCE_ATTR: REFERENCE_VALUE})
    return study


def _wait_for_first_trial(study: optuna.Study) -> None:
    """Give the worker that has just created `study` the moment it needs to enqueue Model 5 as trial 0."""
    deadline = time.monotonic() + REFERENCE_WAIT_S
    while not study.get_trials(deepcopy=False) and time.monotonic() < deadline:
        time.sleep(0.05)


def _lacks_reference(study: optuna.Study) -> bool:
    """A loaded study with trials but no Model 5 trial (made by another tool, or before Model 5 was enqueued).

    A loaded study with no trials at all is left alone: the worker that has just created it is
    enqueuing Model 5 right now, and a second enqueue would train Model 5 twice.
    """
    return bool(study.get_trials(deepcopy=False)) and reference_trial(study) is None


def _check_study_attrs(study: optuna.Study, attrs: Mapping[str, Any]) -> None:
    stored = study.user_attrs
    conflicts = [
        f"{key}={stored[STUDY_ATTR_PREFIX + key]!r} (now {value!r})"
        for key, value in attrs.items()
        if STUDY_ATTR_PREFIX + key in stored and stored[STUDY_ATTR_PREFIX + key] != value
    ]
    if conflicts:
        raise ConfigError(
            f"study {study.study_name!r} was run with {', '.join(conflicts)}; resuming would rank trials trained "
            "under different conditions together. Pass the same settings or choose a new --study-name."
        )
    for key, value in attrs.items():
        if STUDY_ATTR_PREFIX + key not in stored:
            study.set_user_attr(STUDY_ATTR_PREFIX + key, value)


def reference_trial(study: optuna.Study, *, states: Sequence[TrialState] | None = None) -> FrozenTrial | None:
    """The first Model 5 trial (or its retry) in `states` (default: any state), else None."""
    for trial in study.get_trials(deepcopy=False, states=states):
        if trial.user_attrs.get(REFERENCE_ATTR) == REFERENCE_VALUE:
            return trial
    return None


def trial_counts(study: optuna.Study) -> dict[str, int]:
    """trials_complete, trials_pruned, trials_failed (and running/waiting) over the whole study."""
    names = {
        TrialState.COMPLETE: "trials_complete", TrialState.PRUNED: "trials_pruned", TrialState.FAIL: "trials_failed",
        TrialState.RUNNING: "trials_running", TrialState.WAITING: "trials_waiting",
    }  # fmt: skip
    states = [trial.state for trial in study.get_trials(deepcopy=False)]
    return {name: states.count(state) for state, name in names.items()}


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The complete trials that share the best value, lowest number first (empty before any completes).

    Computed here rather than with `study.best_trial` so ties are broken the same way on every
    storage (by trial number), not by whatever order a database returns.
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return []
    pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    best_value = pick(trial.value for trial in complete)
    return sorted((trial for trial in complete if trial.value == best_value), key=lambda trial: trial.number)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial (the lowest-numbered one on a tie), or None when none has completed."""
    tied = best_trials(study)
    return tied[0] if tied else None


def improves_on_best(study: optuna.Study, value: float) -> bool:
    """Strictly better than every complete trial so far (True when none has completed)."""
    best = best_trial(study)
    if best is None:
        return True
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return value > best.value if maximize else value < best.value
