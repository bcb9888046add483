#!/usr/bin/env bash
# Install (if missing) and start a local PostgreSQL server for the study, team-server and UI tests,
# or for a team's MLflow server on one machine (docs/team.md, .ci/mlflow-server.sh).
#
# Idempotent: safe to run again on a machine where the server is already installed and running.
# Creates the login role mammo (password mammo, may create databases) and the databases it owns:
# mammo and mammo_test (Optuna studies), mammo_mlflow (the MLflow server's backend store) and
# mammo_auth (its basic-auth users and permissions), so the tests' default URL
# postgresql://mammo:mammo@127.0.0.1:5432/mammo_test works. Also the role and database
# mammo_secret (password $MAMMO_POSTGRES_SECRET_PASSWORD), which the secrets test reaches only
# through PGPASSWORD and then looks for in the tracking store. Exports nothing; point the tests
# elsewhere with MAMMO_POSTGRES_URL. Debian/Ubuntu (apt, pg_ctlcluster).
set -euo pipefail

ROLE=${MAMMO_POSTGRES_ROLE:-mammo}
PASSWORD=${MAMMO_POSTGRES_PASSWORD:-mammo}
DATABASES=${MAMMO_POSTGRES_DATABASES:-"mammo mammo_test mammo_mlflow mammo_auth"}
SECRET_ROLE=mammo_secret  # tests/test_study_secrets.py: reached through PGPASSWORD only
SECRET_PASSWORD=${MAMMO_POSTGRES_SECRET_PASSWORD:-pgpass-only-5e1b9d}
PORT=${MAMMO_POSTGRES_PORT:-5432}

if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi

as_postgres() {  # run a command as the postgres OS user (peer authentication on the local socket)
  if [ "$(id -un)" = postgres ]; then "$@"; elif [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}

if ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
  echo "postgres.sh: installing PostgreSQL with apt-get"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q postgresql
fi

VERSION=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main"' | grep -q .; then
  echo "postgres.sh: creating cluster $VERSION/main on port $PORT"
  $SUDO pg_createcluster --port "$PORT" "$VERSION" main
fi
if ! pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" && $4 == "online"' | grep -q .; then
  echo "postgres.sh: starting cluster $VERSION/main"
  # pg_ctlcluster works without systemd (containers, CI runners); `service` needs an init system.
  $SUDO pg_ctlcluster "$VERSION" main start
fi

for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p "$PORT" && break
  sleep 1
done
pg_isready -h 127.0.0.1 -p "$PORT"

psql_admin() { as_postgres psql -v ON_ERROR_STOP=1 -p "$PORT" -tAc "$1"; }

ensure_role() {  # role, password
  if [ -z "$(psql_admin "SELECT 1 FROM pg_roles WHERE rolname = '$1'")" ]; then
    psql_admin "CREATE ROLE $1 LOGIN PASSWORD '$2' CREATEDB"
  else
    psql_admin "ALTER ROLE $1 LOGIN CREATEDB PASSWORD '$2'"
  fi
}
ensure_database() {  # database, owner
  if [ -z "$(psql_admin "SELECT 1 FROM pg_database WHERE datname = '$1'")" ]; then
    psql_admin "CREATE DATABASE $1 OWNER $2"
  fi
}

ensure_role "$ROLE" "$PASSWORD"
for DATABASE in $DATABASES; do ensure_database "$DATABASE" "$ROLE"; done
ensure_role "$SECRET_ROLE" "$SECRET_PASSWORD"
ensure_database "$SECRET_ROLE" "$SECRET_ROLE"
echo "postgres.sh: ready at postgresql://$ROLE:***@127.0.0.1:$PORT/ (databases: $DATABASES; and $SECRET_ROLE)"
