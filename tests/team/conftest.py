"""Real servers for the team tests: PostgreSQL and the authenticated MLflow tracking server.

PostgreSQL comes from `.ci/postgres.sh` (role mammo, password mammo; MAMMO_POSTGRES_URL points
elsewhere). One MLflow server for the whole session, started with the recipe itself
(`.ci/mlflow-server.sh`) on fresh databases that are dropped afterwards, with artifacts proxied
into a temporary folder. Without the servers these tests skip, naming `.ci/postgres.sh`; under CI
(`CI` or `MAMMO_REQUIRE_SERVERS` set) they fail instead, so a broken server never passes as a skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from tests.conftest import free_port, stop_process_group

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POSTGRES_URL = "postgresql://mammo:mammo@127.0.0.1:5432/mammo"
SERVER_START_S = 150  # a fresh database: MLflow's migrations take ~20 s on an idle 2-core machine
READER, TRAINER = "reader", "trainer"


def servers_required() -> bool:
    """CI (or MAMMO_REQUIRE_SERVERS=1) turns a missing server into a failure instead of a skip."""
    flags = (os.environ.get(name, "").strip().lower() for name in ("CI", "MAMMO_REQUIRE_SERVERS"))
    return any(flag not in ("", "0", "false", "no") for flag in flags)


def unavailable(message: str) -> None:
    if servers_required():
        pytest.fail(message)
    pytest.skip(message)


@dataclass(frozen=True)
class Postgres:
    url: str  # an admin-ish URL (the mammo role) to the maintenance database, password included
    password: str

    def url_for(self, database: str, *, with_password: bool = False) -> str:
        from sqlalchemy.engine import make_url

        url = make_url(self.url).set(database=database)
        if not with_password:
            url = url._replace(password=None)  # URL.set() ignores None
        return url.render_as_string(hide_password=False)

    def execute(self, statement: str) -> None:
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        engine = sqlalchemy.create_engine(self.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text(statement))
        finally:
            engine.dispose()


@pytest.fixture(scope="session")
def postgres() -> Postgres:
    from sqlalchemy.engine import make_url

    url = os.environ.get("MAMMO_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    url = make_url(url).set(database="mammo").render_as_string(hide_password=False)
    server = Postgres(url=url, password=make_url(url).password or "")
    try:
        server.execute("SELECT 1")
    except Exception as error:  # any driver or connection error means "no server here"
        unavailable(
            f"PostgreSQL not reachable at {make_url(url).render_as_string(hide_password=True)} "
            f"({type(error).__name__}: {str(error).strip().splitlines()[0]}); start it with .ci/postgres.sh."
        )
    return server


@dataclass(frozen=True)
class TeamServer:
    url: str
    passwords: dict[str, str]  # user → password (admin, trainer, reader)
    artifacts: Path  # --artifacts-destination: where the server stores what clients upload
    log: Path

    def env(self, user: str | None) -> dict[str, str]:
        """The client settings a team member exports (docs/team.md); None = anonymous."""
        env = {"MLFLOW_TRACKING_URI": self.url, "MLFLOW_DISABLE_TELEMETRY": "true"}
        if user is not None:
            env |= {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": self.passwords[user]}
        return env

    def request(self, method: str, path: str, payload: dict | None = None, *, user: str | None = "admin") -> dict:
        """A raw REST call (status errors raise urllib.error.HTTPError)."""
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, data=json.dumps(payload).encode() if payload is not None else None,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        if user is not None:
            import base64

            token = base64.b64encode(f"{user}:{self.passwords[user]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")


def _wait_until_healthy(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            unavailable(f"mlflow-server.sh exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
            urllib.request.urlopen(f"{url}/health", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(1)
    unavailable(f"the MLflow server did not answer /health within {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def team_server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeamServer]:
    """.ci/mlflow-server.sh on fresh databases; users trainer (may create) and reader (READ only)."""
    root = tmp_path_factory.mktemp("team-server")
    suffix = secrets.token_hex(4)
    databases = {"MAMMO_MLFLOW_DB": f"mammo_mlflow_{suffix}", "MAMMO_AUTH_DB": f"mammo_auth_{suffix}"}
    for database in databases.values():
        postgres.execute(f"CREATE DATABASE {database}")
    port, log = free_port(), root / "server.log"
    passwords = {"admin": f"admin-{secrets.token_hex(8)}", TRAINER: f"train-{secrets.token_hex(8)}",
                 READER: f"read-{secrets.token_hex(8)}"}  # fmt: skip
    env = {
        **os.environ, **databases, "PGPASSWORD": postgres.password, "MLFLOW_AUTH_ADMIN_PASSWORD": passwords["admin"],
        "MAMMO_ARTIFACTS": str(root / "artifacts"), "MAMMO_MLFLOW_STATE": str(root / "state"),
        "MAMMO_MLFLOW_PORT": str(port), "MAMMO_MLFLOW_WORKERS": "2", "MLFLOW_DISABLE_TELEMETRY": "true",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }  # fmt: skip
    with log.open("wb") as output:
        server = subprocess.Popen(
            ["bash", str(REPO_ROOT / ".ci" / "mlflow-server.sh")], cwd=root, env=env, stdout=output,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(url, server, log)
        handle = TeamServer(url=url, passwords=passwords, artifacts=root / "artifacts", log=log)
        for user in (TRAINER, READER):
            handle.request("POST", "/api/2.0/mlflow/users/create", {"username": user, "password": passwords[user]})
        yield handle
    finally:
        stop_process_group(server)
        for database in databases.values():
            with contextlib.suppress(Exception):
                postgres.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


@pytest.fixture
def as_user(team_server: TeamServer, monkeypatch: pytest.MonkeyPatch):
    """as_user("trainer") points this process's MLflow client at the server as that user (None: anonymous)."""

    def switch(user: str | None) -> dict[str, str]:
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            monkeypatch.delenv(name, raising=False)
        env = team_server.env(user)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        mlflow.set_tracking_uri(team_server.url)
        return env

    return switch
