"""A study on a real PostgreSQL server through the documented route: the password never reaches the tracking store.

(Workers sharing a PostgreSQL study, one killed mid-trial and retried: tests/team/test_killed_worker.py.)

Start the server with `.ci/postgres.sh` (installs PostgreSQL if needed, creates role and database
mammo/mammo_test); point elsewhere with MAMMO_POSTGRES_URL. Without a reachable server the test
is skipped, except under CI (CI or MAMMO_REQUIRE_SERVERS set), where a missing server is a failure.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from mammo import tracking
from mammo.search import space
from tests.test_study_entry import write_tiny_dataset

DEFAULT_URL = "postgresql://mammo:mammo@127.0.0.1:5432/mammo_test"
HEARTBEAT_INTERVAL = 1
GRACE_PERIOD = 5  # four missed heartbeats: slack for workers' heartbeat threads on a busy 2-core machine


def _in_ci() -> bool:
    """CI (or MAMMO_REQUIRE_SERVERS=1, which .ci/run sets) makes a missing server a failure."""
    flags = (os.environ.get(name, "").strip().lower() for name in ("CI", "MAMMO_REQUIRE_SERVERS"))
    return any(flag not in ("", "0", "false", "no") for flag in flags)


@pytest.fixture(scope="module")
def postgres_url() -> str:
    url = os.environ.get("MAMMO_POSTGRES_URL", DEFAULT_URL)
    try:
        engine = sqlalchemy.create_engine(space.rdb_url(url), connect_args={"connect_timeout": 5})
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
    except Exception as error:  # any driver or connection error means "no server here"
        message = (
            f"PostgreSQL not reachable at {space.describe_storage(url)} ({type(error).__name__}: "
            f"{str(error).strip().splitlines()[0]}); start it with .ci/postgres.sh or set MAMMO_POSTGRES_URL."
        )
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def study_name(postgres_url: str) -> Iterator[str]:
    name = f"mammo-test-{uuid.uuid4().hex[:8]}"
    yield name
    with contextlib.suppress(KeyError):  # the test may have failed before creating it
        optuna.delete_study(study_name=name, storage=space.open_storage(postgres_url))


SECRET_ROLE = "mammo_secret"  # .ci/postgres.sh: its password is given to the study only through PGPASSWORD
SECRET_PASSWORD = os.environ.get("MAMMO_POSTGRES_SECRET_PASSWORD", "pgpass-only-5e1b9d")


@pytest.mark.slow
def test_a_study_through_mlflow_run_with_pgpassword_leaves_no_password_in_the_tracking_store(
    postgres_url: str, tmp_path: Path
) -> None:
    """The documented route: a password-free URL, the password in PGPASSWORD, `mlflow run`."""
    import subprocess
    import sys

    import mlflow
    from sqlalchemy.engine import make_url

    # URL.set() ignores None, so the password is dropped with _replace.
    host = make_url(postgres_url).set(username=SECRET_ROLE, database=SECRET_ROLE)._replace(password=None)
    storage = host.render_as_string(hide_password=False)
    dataset = write_tiny_dataset(tmp_path / "tiny")
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PGPASSWORD": SECRET_PASSWORD, "MLFLOW_TRACKING_URI": tracking_uri,
           "MLFLOW_EXPERIMENT_NAME": tracking.EXPERIMENT, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # fmt: skip
    name = f"secret-{uuid.uuid4().hex[:8]}"
    command = [
        str(Path(sys.executable).with_name("mlflow")), "run", str(Path(__file__).resolve().parents[1]), "-e", "study",
        "--env-manager", "local", "-P", f"storage={storage}", "-P", f"study_name={name}", "-P", "n_trials=1",
        "-P", f"data={dataset.path}", "-P", "epochs=1", "-P", "sampler=random",
    ]  # fmt: skip
    try:
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    except FileNotFoundError:  # pragma: no cover - the venv always has the mlflow CLI
        pytest.fail("the mlflow CLI is not next to this Python")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "carries a password" not in done.stderr  # the password-free URL draws no warning

    mlflow.set_tracking_uri(tracking_uri)
    (parent,) = mlflow.search_runs(experiment_names=[tracking.EXPERIMENT], output_format="list",
                                   filter_string="tags.`mammo.entry` = 'study' and tags.`mlflow.runName` LIKE 'study-%'")  # fmt: skip
    assert parent.data.params["storage"] == storage and parent.data.metrics["trials_complete"] == 1
    leaks = [path for path in tmp_path.rglob("*") if path.is_file() and SECRET_PASSWORD.encode() in path.read_bytes()]
    assert leaks == []  # not in mlflow.db (params, tags), not in any artifact
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(path.name == "mlflow.db" for path in files) and len(files) > 10  # the scan saw the store
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=name, storage=space.open_storage(storage_with_password(host)))


def storage_with_password(url: object) -> str:
    return url.set(password=SECRET_PASSWORD).render_as_string(hide_password=False)
