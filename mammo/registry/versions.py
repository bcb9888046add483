"""The model registry side: register (or reuse) a version, move aliases safely, one promotion at a time.

Aliases carry the state (stages are deprecated in MLflow 3): `champion`, `challenger` (the latest
candidate) and `previous-champion`. Three rules keep them trustworthy:

- Only "does not exist" means "no champion yet"; any other registry error (permission, database,
  network) stops the promotion, so a model is never crowned because the champion could not be read.
- Promotions are serialised by a lock that the registry itself holds: a registered model named
  `<model>--promotion-lock`, whose creation is atomic in every MLflow store (SQL's unique name,
  over REST too), whose holder is re-read after creating it. The holder refreshes it while it
  works (long scoring included) and deletes it when done; one not refreshed for `LOCK_STALE_S`
  belongs to a dead promotion and is taken over, by one waiter only (`_take_over`).
- `champion` moves before `previous-champion`, after an intent tag on the new version records the
  predecessor; the tag goes once both moved. A failure in between leaves `champion` moved and the
  intent recorded, and the next promotion finishes the move (`finish_alias_moves`).
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from mammo import tracking
from mammo.core.compat import check_alias_name
from mammo.core.errors import ConfigError, RegistryError

LOCK_SUFFIX = "--promotion-lock"
TAKEOVER_SUFFIX = "--takeover-"  # + a digest of the stale holder: one waiter at a time removes a dead lock
LOCK_WAIT_S = 600.0  # how long a promotion waits for another to finish
LOCK_STALE_S = 900.0  # a lock this old belongs to a promotion that died: taken over
LOCK_POLL_S = 1.0
PENDING_PREVIOUS_TAG = "promotion_pending_previous"  # intent: the alias's previous holder, until both moved
NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"


def previous_alias(alias: str) -> str:
    """`champion` → `previous-champion` (tracking.ALIAS_PREVIOUS), any other alias likewise."""
    return tracking.ALIAS_PREVIOUS if alias == tracking.ALIAS_CHAMPION else f"previous-{alias}"


def check_alias(alias: str) -> None:
    """Refuse, before anything is registered, an alias MLflow would refuse or that collides with ours."""
    if alias == tracking.ALIAS_CHALLENGER or alias.startswith("previous-"):
        raise ConfigError(
            f"--alias {alias!r} is one promote manages itself ({tracking.ALIAS_CHALLENGER}, previous-*); "
            f"use {tracking.ALIAS_CHAMPION!r} or a name of your own (e.g. 'staging')."
        )
    for name in (alias, previous_alias(alias)):
        try:
            check_alias_name(name)
        except MlflowException as error:
            raise ConfigError(
                f"--alias {alias!r}: {error.message} Use letters, digits, '-' and '_', not 'latest' or 'v<number>'."
            ) from error


def _failed(action: str, error: MlflowException) -> RegistryError:
    return RegistryError(f"{action} failed ({error.error_code}: {error.message}); nothing was promoted.")


def current_version(model_name: str, alias: str) -> ModelVersion | None:
    """The version holding `alias`; None only when the model does not exist or has no such alias.

    Read as data (the registered model's alias table), not inferred from an error: "alias not
    found" shares its error code with bad requests, and any other failure must stop a promotion.
    """
    client = MlflowClient()
    try:
        model = client.get_registered_model(model_name)
    except MlflowException as error:
        if error.error_code == NOT_FOUND:
            return None
        raise _failed(f"reading alias {alias!r} of {model_name!r}", error) from error
    version = (model.aliases or {}).get(alias)
    if version is None:
        return None
    try:
        return client.get_model_version(model_name, str(version))
    except MlflowException as error:
        raise _failed(f"reading version {version} of {model_name!r} (alias {alias!r})", error) from error


def version_of_run(model_name: str, run_id: str, model_uri: str) -> ModelVersion | None:
    """The version already registered from this run's model, if any (newest first)."""
    try:
        versions = MlflowClient().search_model_versions(f"name = '{model_name}' AND run_id = '{run_id}'")
    except MlflowException as error:
        if error.error_code == NOT_FOUND:
            return None
        raise _failed(f"searching {model_name!r} for run {run_id}", error) from error
    model_id = model_uri.removeprefix("models:/")
    same = [version for version in versions if model_id in (version.source or "") or version.model_id == model_id]
    return max(same or versions, key=lambda version: int(version.version)) if (same or versions) else None


def register(model_name: str, model_uri: str, *, run_id: str, tags: Mapping[str, str]) -> tuple[ModelVersion, bool]:
    """(the version for this run's model, whether it was newly registered); aliased `challenger` either way."""
    version = version_of_run(model_name, run_id, model_uri)
    created = version is None
    client = MlflowClient()
    try:
        if version is None:
            # MlflowClient, not mlflow.register_model: the latter waits and prints, and swallows nothing useful.
            try:
                client.create_registered_model(model_name)
            except MlflowException as error:
                if error.error_code != ALREADY_EXISTS:
                    raise
            # A LoggedModel source (models:/<model_id>) is registered with its id, as mlflow.register_model does;
            # a tracking server refuses the source without it.
            model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
            version = client.create_model_version(
                model_name, model_uri, run_id=run_id, tags=dict(tags), model_id=model_id, await_creation_for=0
            )
        client.set_registered_model_alias(model_name, tracking.ALIAS_CHALLENGER, version.version)
    except MlflowException as error:
        raise _failed(f"registering run {run_id} as {model_name!r}", error) from error
    return version, created


def set_version_tags(model_name: str, version: str, tags: Mapping[str, str], *, description: str) -> None:
    client = MlflowClient()
    try:
        for key, value in tags.items():
            client.set_model_version_tag(model_name, version, key, str(value))
        client.update_model_version(model_name, version, description=description)
    except MlflowException as error:
        raise _failed(f"recording the decision on {model_name} version {version}", error) from error


def move_alias(model_name: str, alias: str, version: str, previous: str | None) -> None:
    """`alias` → version, then previous_alias(alias) → previous, with the intent written first."""
    client = MlflowClient()
    try:
        client.set_model_version_tag(model_name, version, PENDING_PREVIOUS_TAG, previous or "")
        client.set_registered_model_alias(model_name, alias, version)
    except MlflowException as error:
        raise _failed(f"moving alias {alias!r} of {model_name!r} to version {version}", error) from error
    _finish_move(client, model_name, alias, version, previous)


def _finish_move(client: MlflowClient, model_name: str, alias: str, version: str, previous: str | None) -> None:
    try:
        if previous:
            client.set_registered_model_alias(model_name, previous_alias(alias), previous)
        client.delete_model_version_tag(model_name, version, PENDING_PREVIOUS_TAG)
    except MlflowException as error:
        raise RegistryError(
            f"{alias!r} now points at {model_name} version {version}, but moving {previous_alias(alias)!r} to "
            f"version {previous} failed ({error.error_code}: {error.message}). The intent is recorded on the "
            "version: the next `promote` finishes the move."
        ) from error


def finish_alias_moves(model_name: str, alias: str) -> None:
    """Complete an alias move that a failed promotion left half done (see the module docstring)."""
    version = current_version(model_name, alias)
    if version is None or PENDING_PREVIOUS_TAG not in (version.tags or {}):
        return
    _finish_move(MlflowClient(), model_name, alias, str(version.version), version.tags[PENDING_PREVIOUS_TAG] or None)


@dataclass
class _LockState:
    holder: str
    since: float


class PromotionLock:
    """A held promotion lock; a background thread refreshes its `since` tag while the promotion runs.

    Refreshing every `stale_s / 4` keeps a long scoring step from looking like a dead holder. The
    thread also re-reads the holder each time: if the lock is gone or another process holds it,
    `confirm()` raises, and the promotion stops before it writes anything.
    """

    def __init__(self, client: MlflowClient, name: str, holder: str, *, stale_s: float) -> None:
        self.client, self.name, self.holder = client, name, holder
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._refresh, args=(max(stale_s / 4, 0.05),), name=f"{name} refresh", daemon=True
        )

    def _refresh(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                state = _read_lock(self.client, self.name)
                if state is None or state.holder != self.holder:
                    self.lost = f"held by {state.holder}" if state else "deleted"
                    return
                self.client.set_registered_model_tag(self.name, "since", f"{time.time():.3f}")
            except (MlflowException, RegistryError):  # the registry unreachable for a moment: the next beat retries
                continue

    def confirm(self) -> None:
        """Raise unless the lock is still ours (checked now, not only at the last refresh)."""
        state = None if self.lost else _read_lock(self.client, self.name)
        if self.lost or state is None or state.holder != self.holder:
            raise RegistryError(
                f"the promotion lock {self.name!r} was lost while this promotion ran "
                f"({self.lost or (f'held by {state.holder}' if state else 'deleted')}); nothing was promoted. "
                "Run `promote` again."
            )

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        try:
            state = _read_lock(self.client, self.name)
            if state is not None and state.holder == self.holder:
                self.client.delete_registered_model(self.name)
        except MlflowException:
            pass  # taken over as stale, or already gone: not ours to delete


@contextmanager
def promotion_lock(
    model_name: str, *, wait_s: float = LOCK_WAIT_S, stale_s: float = LOCK_STALE_S, poll_s: float = LOCK_POLL_S
) -> Iterator[PromotionLock]:
    """Hold the registry-wide promotion lock of `model_name` (see the module docstring)."""
    client, name = MlflowClient(), f"{model_name}{LOCK_SUFFIX}"
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + wait_s
    while not _try_lock(client, name, holder, stale_s=stale_s):
        if time.monotonic() > deadline:
            raise RegistryError(
                f"another promotion of {model_name!r} holds the lock (registered model {name!r}) for longer than "
                f"{wait_s:.0f} s. Wait for it, or if that process died, delete {name!r} in the registry "
                f"(MlflowClient().delete_registered_model({name!r}))."
            )
        time.sleep(poll_s)
    lock = PromotionLock(client, name, holder, stale_s=stale_s)
    lock._thread.start()
    try:
        yield lock
    finally:
        lock.release()


def _read_lock(client: MlflowClient, name: str) -> _LockState | None:
    """The lock's holder and the time it was last taken or refreshed; None when there is no lock."""
    try:
        tags = client.get_registered_model(name).tags or {}
    except MlflowException as error:
        if error.error_code == NOT_FOUND:
            return None
        raise _failed(f"reading the promotion lock {name!r}", error) from error
    try:
        since = float(tags.get("since", "inf"))
    except ValueError:
        since = float("inf")  # a hand-made lock without a time is never taken as stale
    return _LockState(tags.get("holder", ""), since)


def _try_lock(client: MlflowClient, name: str, holder: str, *, stale_s: float) -> bool:
    """One attempt: create the lock (then re-read that it is ours), or take a stale one over for the next attempt."""
    tags = {"holder": holder, "since": f"{time.time():.3f}"}
    description = f"Held while `promote` runs ({holder}); deleted when it finishes. Do not use as a model."
    try:
        client.create_registered_model(name, tags=tags, description=description)
    except MlflowException as error:
        if error.error_code != ALREADY_EXISTS:
            raise _failed(f"taking the promotion lock {name!r}", error) from error
    state = _read_lock(client, name)
    if state is None:
        return False  # released meanwhile: try again at once on the next poll
    if state.holder == holder:
        return True  # ours: created now, or by an earlier attempt whose answer was lost (a retried request)
    if time.time() - state.since > stale_s:
        _take_over(client, name, state, holder, stale_s=stale_s)
    return False


def _take_over(client: MlflowClient, name: str, stale: _LockState, holder: str, *, stale_s: float) -> None:
    """Delete a dead holder's lock, once, whoever else is waiting.

    Deleting what was read a moment ago is a race: two waiters both read the stale lock, one
    deletes it and takes the lock, and the other's delete then removes the new holder's lock. So
    a waiter first creates a takeover marker named after the stale holder (atomic, like the lock),
    re-reads the lock under it and deletes it only if it is still that holder's, at that time.
    Only one waiter holds the marker; the next one to get it finds the lock changed and leaves it.
    """
    digest = hashlib.sha256(f"{stale.holder} {stale.since}".encode()).hexdigest()[:16]
    marker = f"{name}{TAKEOVER_SUFFIX}{digest}"
    try:
        client.create_registered_model(marker, tags={"holder": holder, "since": f"{time.time():.3f}"})
    except MlflowException as error:
        if error.error_code != ALREADY_EXISTS:
            raise _failed(f"taking over the stale promotion lock {name!r}", error) from error
        _clear_dead_marker(client, marker, stale_s=stale_s)
        return
    try:
        if _read_lock(client, name) == stale:
            client.delete_registered_model(name)  # still the dead holder's: gone, the next attempt creates ours
    except MlflowException as error:
        raise RegistryError(
            f"the promotion lock {name!r} is stale (held by {stale.holder} since {time.ctime(stale.since)}) but "
            f"cannot be removed ({error.message}); ask the registry's admin to delete it."
        ) from error
    finally:
        with suppress(MlflowException):
            client.delete_registered_model(marker)


def _clear_dead_marker(client: MlflowClient, marker: str, *, stale_s: float) -> None:
    """A takeover marker older than `stale_s` belongs to a waiter that died taking over: removed."""
    state = _read_lock(client, marker)
    if state is not None and time.time() - state.since > stale_s:
        with suppress(MlflowException):
            client.delete_registered_model(marker)
