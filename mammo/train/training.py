"""Fit one configuration, keep the best-val_loss weights, and log it all as one MLflow run.

`fit` is pure training (no MLflow): the Optuna objective calls it with its own callbacks.
`train_run` wraps it in a run: params, the dataset input, per-epoch metrics (step = 1-based
epoch), the test report for the best checkpoint ("opt") and for the last epoch (`_end`), the
training plots, the model summary and the served model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from mammo import tracking
from mammo.core.decision import DEFAULT_THRESHOLD
from mammo.core.errors import ConfigError
from mammo.core.precision import choose_precision
from mammo.data.store import PreparedDataset
from mammo.model.pipeline import Splits, make_datasets, train_stream
from mammo.model.variants import TrainConfig, build_model, make_optimizer, regularization_penalty
from mammo.train.resume import ROOT_ENV, EpochCheckpoint, Start, checkpoint_folder, weights_digest


@dataclass
class TrainResult:
    """A fitted model (best-val_loss weights restored) and what the run reports about it."""

    model: keras.Model
    history: dict[str, list[float]]  # Keras' per-epoch logs, learning_rate included
    best_epoch: int  # 1-based epoch whose weights `model` holds
    probabilities: np.ndarray  # test P(calcification) at the best epoch, in splits.test_indices order
    end_probabilities: np.ndarray  # the same at the last epoch ("end")
    splits: Splits
    precision: str  # the dtype policy actually used
    train_seconds: float  # wall time of model.fit (all epochs, validation included)
    val_probabilities: np.ndarray | None = None  # validation P(calcification) of the kept weights
    threshold: float = DEFAULT_THRESHOLD  # decision threshold chosen on validation (config.threshold)
    penalty: float = 0.0  # the kept weights' L2 term (Keras adds it to val_loss; test_loss adds it too)
    end_penalty: float = 0.0  # the same for the last epoch's weights
    weights_params: dict[str, str] = dataclasses.field(default_factory=dict)  # a backbone's weights file and hash

    @property
    def epochs_run(self) -> int:
        return len(self.history.get("loss", []))

    @property
    def val_accuracy(self) -> float:
        """Validation accuracy of the kept (best-val_loss) weights."""
        return float(self.history["val_accuracy"][self.best_epoch - 1])

    def kept_metrics(self) -> dict[str, float]:
        """The kept epoch's validation scores under tracking.KEPT_METRICS, plus best_epoch."""
        kept = {
            tracking.kept_metric(name): float(self.history[name][self.best_epoch - 1])
            for name in ("val_loss", "val_accuracy", "val_auc")
            if len(self.history.get(name, ())) >= self.best_epoch
        }
        return kept | {"best_epoch": float(self.best_epoch)}


class LearningRateLogger(keras.callbacks.Callback):
    """Puts the optimizer's current learning rate (after the decay schedule) into the epoch logs."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class BestWeights(keras.callbacks.Callback):
    """Remembers the weights of the lowest-val_loss epoch (the published "opt" checkpoint).

    Kept apart from EarlyStopping so the best checkpoint exists for every variant, also those
    that train without early stopping (models 0–2), and is kept in memory, not on disk.
    """

    def __init__(self) -> None:
        super().__init__()
        self.best_loss = np.inf
        self.best_epoch = 0  # 1-based; 0 until an epoch reports a finite val_loss
        self.weights: list[np.ndarray] | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        loss = float((logs or {}).get("val_loss", np.nan))
        if np.isfinite(loss) and loss < self.best_loss:
            self.best_loss, self.best_epoch = loss, epoch + 1
            self.weights = [np.array(w) for w in self.model.get_weights()]

    def restore(self) -> None:
        if self.weights is not None:
            self.model.set_weights(self.weights)


class MlflowEpochLogger(keras.callbacks.Callback):
    """Logs tracking.EPOCH_METRICS to the active run after each epoch, step = 1-based epoch.

    `logged` are the steps the run already has (a resumed run redoes the epochs after its last
    uploaded checkpoint, with the same values): they are not logged twice.
    """

    def __init__(self, logged: frozenset[int] = frozenset()) -> None:
        super().__init__()
        self.logged = logged

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        if epoch + 1 in self.logged:
            return
        names = (*tracking.EPOCH_METRICS, *tracking.BACKBONE_EPOCH_METRICS)
        tracking.log_metrics({name: logs[name] for name in names if name in logs}, step=epoch + 1)


class _NewModelsAreNotRetracing(logging.Filter):
    """Drops TF's "triggered tf.function retracing" note: train_all and the study build a new model per run on
    purpose, and TF counts each new model's first trace as a retrace of the last one. Everything else passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def quiet_retracing_notes() -> None:
    logger = tf.get_logger()
    if not any(isinstance(existing, _NewModelsAreNotRetracing) for existing in logger.filters):
        logger.addFilter(_NewModelsAreNotRetracing())


def make_deterministic() -> None:
    """Switch on TF's op determinism where it is needed: on a GPU (cuDNN picks racing kernels).

    Measured on the 2-core CPU: it costs nothing (19–23 img per CPU-second with and without), but
    it is not needed there (seeded runs repeat exactly across processes without it) and it makes
    TF log a spurious "NodeDef mentions attribute use_unbounded_threadpool" error in the terminal.
    """
    if tf.config.list_physical_devices("GPU"):
        tf.config.experimental.enable_op_determinism()


def default_verbosity() -> int:
    """Keras' progress bar in a terminal; one line per epoch in logs and CI (no \\r clutter)."""
    return 1 if sys.stdout.isatty() else 2


def fit(
    config: TrainConfig, dataset: PreparedDataset, *, callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | None = None, checkpoint: EpochCheckpoint | None = None,
) -> TrainResult:  # fmt: skip
    """Train `config` on `dataset`; the same seed on the same machine gives the same result.

    Seeds: keras.utils.set_random_seed (Python, NumPy, TF, Keras) before building anything, the
    shuffle and the augmentation layers seeded from config.seed, augmentation run sequentially.
    With a `checkpoint`, every epoch is saved, and a saved one is where the fit goes on from: the
    result is then the one an uninterrupted fit would have given (`mammo.train.resume`).
    """
    make_deterministic()
    quiet_retracing_notes()
    keras.utils.set_random_seed(config.seed)
    precision = choose_precision(config.precision)
    splits = make_datasets(dataset, config)
    weights_params: dict[str, str] = {}
    if config.backbone:
        from mammo.model.backbones import build_backbone_model

        model, weights = build_backbone_model(config, dtype_policy=precision)
        weights_params = weights.params()
    else:
        model = build_model(config, dtype_policy=precision, pixel_stats=splits.pixel_stats)
        compile_model(model, config, precision=precision)
    best = BestWeights()
    best.set_model(model)  # also when a resumed run has no epoch left to fit
    own: list[keras.callbacks.Callback] = [LearningRateLogger(), best]
    stopping = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience)
    if config.patience > 0:
        own.append(stopping)
    if config.backbone:
        from mammo.train import finetune

        own.insert(0, finetune.PhaseMarker())
        if checkpoint is not None and checkpoint.exists():
            raise ConfigError(
                f"{config.variant}: resuming a backbone run is not supported (its two phases change what trains); "
                "start it again without --resume."
            )
        checkpoint = None  # a backbone run's phases recompile the model: its epochs are not checkpointed
    start = Start()
    if checkpoint is not None:  # after the callbacks it saves, before the caller's (the epoch metrics)
        checkpoint.watch(best=best, early_stopping=stopping if config.patience > 0 else None)
        start = checkpoint.restore(model)
        own.append(checkpoint)
    stream = train_stream(dataset, config, splits.train_indices, start_step=start.epoch * splits.train_steps)
    started = time.perf_counter()
    # One endless iterator with epochs counted in steps: re-creating the tf.data iterator at each
    # epoch (the default for a finite dataset) sometimes stalled for ~18 s with the CPU idle on the
    # 2-core machine (measured: 4 epochs took 111 s that way and 91 s repeated). The stall was the
    # iterator's destructor joining tf.data's autotuning thread; `pipeline.without_autotuning` removes
    # it (it struck the endless iterator too, once, at the end of fit).
    fit_epochs = functools.partial(
        model.fit, stream, steps_per_epoch=splits.train_steps, validation_data=splits.val,
        callbacks=[*own, *callbacks], shuffle=False, verbose=default_verbosity() if verbose is None else verbose,
    )  # fmt: skip
    history = {}
    if config.backbone:  # phase 1 head only, phase 2 the top blocks: one epoch counter, one kept checkpoint
        history = finetune.fit_in_phases(
            model, config, marker=own[0], fit_epochs=fit_epochs,
            compile_model=lambda net, rate: compile_model(net, config, precision=precision, learning_rate=rate),
        )  # fmt: skip
    elif not start.done(config.epochs):
        history = fit_epochs(epochs=config.epochs, initial_epoch=start.epoch).history
    seconds = start.fit_seconds + time.perf_counter() - started
    end_probabilities = predict_probabilities(model, splits)
    end_penalty = regularization_penalty(model)
    logs = {
        name: [float(value) for value in (*start.history.get(name, ()), *history.get(name, ()))]
        for name in dict.fromkeys([*start.history, *history])
    }
    epochs_run = len(logs.get("loss", []))
    # The kept checkpoint differs from the last epoch's weights only when val_loss was lower earlier.
    restored = best.weights is not None and best.best_epoch != epochs_run
    best.restore()
    val_probabilities = np.asarray(model.predict(splits.val, verbose=0), dtype=np.float64).reshape(-1)
    return TrainResult(
        model=model,
        history=logs,
        best_epoch=best.best_epoch or epochs_run,
        probabilities=predict_probabilities(model, splits) if restored else end_probabilities,
        end_probabilities=end_probabilities,
        splits=splits,
        precision=precision,
        train_seconds=seconds,
        val_probabilities=val_probabilities,
        threshold=decision_threshold(config, dataset.labels[splits.val_indices], val_probabilities),
        penalty=regularization_penalty(model),
        end_penalty=end_penalty,
        weights_params=weights_params,
    )


def compile_model(
    model: keras.Model, config: TrainConfig, *, precision: str, learning_rate: float | None = None
) -> None:
    """Compile with the config's optimizer (at `learning_rate` if given), loss and metrics."""
    if learning_rate is not None:
        config = dataclasses.replace(config, learning_rate=learning_rate)
    optimizer = make_optimizer(config)
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    # jit_compile=False: XLA made model5 about 2× slower on the 2-core CPU (9 vs 20 img/s, measured).
    model.compile(
        optimizer=optimizer, loss="binary_crossentropy", jit_compile=False,
        metrics=["accuracy", keras.metrics.AUC(name="auc")],
    )  # fmt: skip


def decision_threshold(config: TrainConfig, val_labels: np.ndarray, val_probabilities: np.ndarray) -> float:
    """The threshold `config.threshold` asks for, chosen on the validation predictions of the kept weights."""
    from mammo.model.variants import threshold_rule
    from mammo.report import evaluation

    method, target = threshold_rule(config.threshold)
    try:
        return evaluation.choose_threshold(val_labels, val_probabilities, method=method, target=target)
    except ValueError as error:
        raise ConfigError(f"parameter threshold={config.threshold!r}: {error}") from error


def keras_loss(labels: np.ndarray, probabilities: np.ndarray, penalty: float) -> float:
    """Cross-entropy + the weights' L2 term: what Keras reports as `val_loss`, on other patches."""
    from mammo.report import evaluation

    return evaluation.classification_metrics(labels, probabilities)["test_loss"] + penalty


def predict_probabilities(model: keras.Model, splits: Splits) -> np.ndarray:
    """Test-split P(calcification), one per row of splits.test_indices."""
    return np.asarray(model.predict(splits.test, verbose=0), dtype=np.float64).reshape(-1)


def effective_split_by(config: TrainConfig, dataset: PreparedDataset) -> str:
    """The validation split a run really gets: per image on data without patient ids, whatever was asked.

    On such data (`--source tensors`) every patch is its own group, so a "patient" split is a split
    per image, with the CC and MLO views of one lesion free to land on both sides; the run says so.
    """
    if config.split_by == "patient" and not dataset.patients_known:
        warnings.warn(
            f"{dataset.path} carries no patient ids (source {dataset.source}): the validation split is per image, "
            "so views of one lesion may fall on both sides; the run logs split_by=image.",
            UserWarning,
            stacklevel=3,
        )
        return "image"
    return config.split_by


def run_params(config: TrainConfig, dataset: PreparedDataset, *, precision: str) -> dict[str, str | int | float]:
    """The params a training run logs: the config, the resolved precision, and the data's identity.

    `data_patients_in_both_splits` is the leakage the official split itself carries ("unknown"
    where the data has no patient ids).
    """
    # `precision` is what was asked for (e.g. "auto"), `dtype_policy` what it resolved to here.
    overlap = dataset.patients_in_both_splits
    return {
        **config.params(), "split_by": effective_split_by(config, dataset), "dtype_policy": precision,
        "data_source": dataset.source, "data_digest": dataset.digest,
        "data_patients_in_both_splits": "unknown" if overlap is None else overlap,
    }  # fmt: skip


def model_summary(model: keras.Model, *, header: str = "") -> str:
    lines: list[str] = [header] if header else []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    return "\n".join(lines) + "\n"


def train_run(
    config: TrainConfig, dataset: PreparedDataset, *, run_name: str | None = None, nested: bool = False,
    parent_run_id: str | None = None, callbacks: Sequence[keras.callbacks.Callback] = (), log_model: bool = True,
    tags: Mapping[str, str] | None = None, experiment: str | None = None, verbose: int | None = None,
    started: list[str] | None = None, resume_run_id: str | None = None, checkpoint_every: int = 0,
) -> tuple[str, TrainResult, dict[str, float]]:  # fmt: skip
    """Train and log one MLflow run; returns (run_id, result, the final metrics logged).

    Each phase's wall time is logged as `seconds_<phase>` (start, fit, report, plots, model), so a
    run shows where its time went; `fit_seconds` is model.fit alone. A run that raises ends FAILED
    with the error on it (`tracking.record_failure`: a tag and the traceback); `started`, when
    given, receives the run id as soon as the run exists, so a caller knows which run failed.
    Every epoch is checkpointed (`mammo.train.resume`; uploaded to the run's artifacts every `checkpoint_every` epochs when > 0);
    `resume_run_id`, or a run that `mlflow run --run-id` reopens, goes on from its checkpoint.
    """

    run_tags = {tracking.ENTRY_TAG: "train", tracking.VARIANT_TAG: config.variant, **(tags or {})}
    name = run_name or f"{config.variant}-seed{config.seed}"
    phases = PhaseTimer()
    params = run_params(config, dataset, precision=choose_precision(config.precision))
    if resume_run_id and tracking.project_run_id() not in (None, resume_run_id):
        raise ConfigError(
            f"run {resume_run_id}: inside `mlflow run`, resume it with `mlflow run -e train --run-id {resume_run_id}`."
        )
    reopened = resume_run_id or (None if nested or parent_run_id else tracking.project_run_id())
    if reopened:
        tracking.refuse_finished(reopened)
    with tracking.start_run(
        run_name=name, experiment=experiment, nested=nested, parent_run_id=parent_run_id, tags=run_tags,
        system_metrics=True, run_id=resume_run_id,
    ) as run:  # fmt: skip
        run_id = run.info.run_id
        if started is not None:
            started.append(run_id)
        try:
            with phases("start"):
                checkpoint = run_checkpoint(run_id, params=params, upload_every=checkpoint_every)
                logged = tracking.metric_steps(run_id, "loss") if reopened else frozenset()
                if logged and not checkpoint.exists():
                    raise ConfigError(
                        f"run {run_id} has {len(logged)} epochs logged but no checkpoint in {checkpoint.folder} "
                        f"or its artifacts; set {ROOT_ENV} to the checkpoint folder of the machine it trained on."
                    )
                if not checkpoint.exists():
                    tracking.log_params(params)
                    tracking.log_prepared_input(dataset, context="training")
            with phases("fit"):
                epoch_logger = MlflowEpochLogger(logged)
                result = fit(
                    config, dataset, callbacks=[epoch_logger, *callbacks], verbose=verbose, checkpoint=checkpoint
                )
            for epoch in range(1, checkpoint.start.epoch + 1):  # checkpointed, but killed before its metrics
                if epoch not in logged:
                    epoch_logger.on_epoch_end(
                        epoch - 1, {name: values[epoch - 1] for name, values in result.history.items()}
                    )
            if config.standardize:  # the statistics baked into the model's Normalization layer
                mean, std = result.splits.pixel_stats
                tracking.log_params({"standardize_mean": f"{mean:.6g}", "standardize_std": f"{std:.6g}"})
            if result.weights_params:  # where a backbone's starting weights came from, and their hash
                tracking.log_params(result.weights_params)
            metrics = log_outcome(result, config=config, dataset=dataset, log_model=log_model, phases=phases)
            tracking.log_metrics(phases.metrics())
            tracking.set_tags({tracking.KEPT_WEIGHTS_TAG: weights_digest(result.model.get_weights())})
        except Exception as error:  # the run ends FAILED as the error leaves the `with`; say why on it first
            try:
                tracking.record_failure(error)
            except Exception as unrecorded:  # the tracking store itself failing: keep the original error
                error.add_note(f"(its run {run_id} could not record it: {unrecorded})")
            raise
    checkpoint.remove()
    return run_id, result, metrics


def run_checkpoint(run_id: str, *, params: Mapping[str, object], upload_every: int) -> EpochCheckpoint:
    """The run's checkpoint, fetched from its artifacts when this machine has no copy of it."""
    folder = checkpoint_folder(run_id)
    checkpoint = EpochCheckpoint(
        folder, fingerprint=params, upload_every=upload_every,
        upload=lambda path: tracking.log_artifact(path, tracking.CHECKPOINT_ARTIFACTS),
    )  # fmt: skip
    if not checkpoint.exists():
        tracking.fetch_artifact(run_id, f"{tracking.CHECKPOINT_ARTIFACTS}/{checkpoint.path.name}", folder)
    return checkpoint


class PhaseTimer:
    """Wall seconds per named phase of a run (`with timer("fit"): ...`), logged as `seconds_<phase>`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def metrics(self) -> dict[str, float]:
        return {f"seconds_{name}": round(value, 3) for name, value in self.seconds.items()}


def log_outcome(
    result: TrainResult, *, config: TrainConfig, dataset: PreparedDataset, log_model: bool,
    phases: PhaseTimer | None = None,
) -> dict[str, float]:  # fmt: skip
    """Final metrics (best checkpoint, then `_end`), plots, predictions, summary and the model."""
    from mammo.report import reports
    from mammo.serve import serving

    phases = phases or PhaseTimer()
    test_rows = result.splits.test_indices
    labels = dataset.labels[test_rows]
    with phases("report"):
        metrics = reports.log_test_report(
            probabilities=result.probabilities, dataset=dataset, indices=test_rows,
            loss=keras_loss(labels, result.probabilities, result.penalty), threshold=result.threshold,
        )  # fmt: skip
        metrics |= reports.log_test_report(
            probabilities=result.end_probabilities, dataset=dataset, indices=test_rows, suffix=tracking.END_SUFFIX,
            plots=False, loss=keras_loss(labels, result.end_probabilities, result.end_penalty),
            threshold=result.threshold,
        )  # fmt: skip
        used = len(result.splits.val_indices) / (len(result.splits.val_indices) + len(result.splits.train_indices))
        extra = {"decision_threshold": result.threshold, "fit_seconds": result.train_seconds, "val_fraction_used": used}
        if result.train_seconds > 0:
            extra["train_images_per_second"] = (
                len(result.splits.train_indices) * result.epochs_run / result.train_seconds
            )
        kept = result.kept_metrics()  # the per-epoch series stay one point per epoch
        tracking.log_metrics(extra | kept)
        metrics |= kept
    with phases("saliency"):
        reports.log_saliency(  # Grad-CAM of the kept model on the worst and some correct test patches
            model=result.model, dataset=dataset, indices=test_rows, probabilities=result.probabilities,
            image_size=config.image_size, threshold=result.threshold,
        )  # fmt: skip
    with phases("plots"):
        reports.log_training_plots(  # epochs numbered from 1, as the metrics' steps and best_epoch
            history=result.history, best_epoch=result.best_epoch, dataset=dataset,
            train_indices=result.splits.train_indices,
        )  # fmt: skip
        header = f"variant {config.variant}, precision {result.precision}, best epoch {result.best_epoch}/{result.epochs_run}"
        tracking.log_text(model_summary(result.model, header=header), tracking.SUMMARY_FILE)
    if log_model:
        with phases("model"):
            example = np.asarray(dataset.patches[test_rows[:2]])  # (2, S0, S0) uint16, as prepared
            serving.log_model(
                result.model, image_size=config.image_size, input_example=example, threshold=result.threshold
            )
    return metrics
