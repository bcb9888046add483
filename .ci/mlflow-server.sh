#!/usr/bin/env bash
# Run the team's MLflow tracking server (docs/team.md): runs and the model registry in PostgreSQL,
# artifacts proxied by the server (clients never need storage credentials), basic auth with
# default_permission READ and an admin password that the operator chooses.
#
# Runs in the foreground (use systemd, tmux or `&`); the tests start it the same way. Needs the
# `team` extra (pip install -e '.[team]': psycopg 3 for postgresql:// URLs, Flask-WTF for
# --app-name basic-auth) and a PostgreSQL server with the two databases (.ci/postgres.sh makes
# them on this machine; on a managed PostgreSQL create them once and point MAMMO_PG_HOST at it).
#
# Required:
#   MLFLOW_AUTH_ADMIN_PASSWORD   the admin's password, used when the auth database has no admin yet
#                                (MLflow ships no default; 'password1234' is refused); 12+ characters
#   PGPASSWORD or ~/.pgpass      the database password (libpq reads both): never put it in a URL here
# Optional (defaults in brackets):
#   MAMMO_PG_HOST [127.0.0.1]  MAMMO_PG_PORT [5432]  MAMMO_PG_USER [mammo]
#   MAMMO_MLFLOW_DB [mammo_mlflow]  MAMMO_AUTH_DB [mammo_auth]
#   MAMMO_ARTIFACTS [./mlartifacts]   a folder, or s3://bucket/prefix, gs://bucket/prefix, ...
#   MAMMO_MLFLOW_HOST [127.0.0.1]  MAMMO_MLFLOW_PORT [5000]  MAMMO_MLFLOW_WORKERS [2]
#   MAMMO_MLFLOW_STATE [./.mlflow-server]   holds the generated auth config and the CSRF secret key
#   MLFLOW_FLASK_SERVER_SECRET_KEY   the CSRF key shared by every server process [generated once
#                                    into $MAMMO_MLFLOW_STATE/secret_key]
#   MAMMO_AUTH_CACHE_TTL [60]  seconds a checked password stays cached per server process: without the
#                              cache every request re-runs the PBKDF2 check (a training run makes
#                              hundreds); a changed password may keep working this long (0: no cache)
#   MLFLOW_SERVER_ENABLE_JOB_EXECUTION [false]  MLflow's GenAI job runner (judges, trace rollups):
#                              two more processes a training team does not need
#   MAMMO_MLFLOW_EXTRA_ARGS    more `mlflow server` options, e.g. "--allowed-hosts mlflow.lab.example"
set -euo pipefail

PG_HOST=${MAMMO_PG_HOST:-127.0.0.1}
PG_PORT=${MAMMO_PG_PORT:-5432}
PG_USER=${MAMMO_PG_USER:-mammo}
MLFLOW_DB=${MAMMO_MLFLOW_DB:-mammo_mlflow}
AUTH_DB=${MAMMO_AUTH_DB:-mammo_auth}
ARTIFACTS=${MAMMO_ARTIFACTS:-./mlartifacts}
HOST=${MAMMO_MLFLOW_HOST:-127.0.0.1}
PORT=${MAMMO_MLFLOW_PORT:-5000}
WORKERS=${MAMMO_MLFLOW_WORKERS:-2}
STATE=${MAMMO_MLFLOW_STATE:-./.mlflow-server}
AUTH_CACHE_TTL=${MAMMO_AUTH_CACHE_TTL:-60}
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}

fail() { echo "mlflow-server.sh: $*" >&2; exit 2; }

[ -n "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ] || fail "set MLFLOW_AUTH_ADMIN_PASSWORD to the admin password you chose (MLflow ships no default)."
[ "$MLFLOW_AUTH_ADMIN_PASSWORD" != "password1234" ] || fail "'password1234' is the password old MLflow versions shipped; choose another."
[ ${#MLFLOW_AUTH_ADMIN_PASSWORD} -ge 12 ] || fail "MLFLOW_AUTH_ADMIN_PASSWORD is shorter than 12 characters; choose a longer one."
command -v mlflow >/dev/null || fail "mlflow is not on PATH; activate the project's environment (make setup; . .venv/bin/activate)."
python - <<'EOF' || fail "the team extra is missing: pip install -e '.[team]' (psycopg 3 and Flask-WTF)."
import flask_wtf, psycopg  # noqa: F401  # basic-auth app; SQLAlchemy 2.1's driver for postgresql://
EOF

mkdir -p "$STATE"
chmod 700 "$STATE"
if [ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]; then
  if [ ! -s "$STATE/secret_key" ]; then
    (umask 077 && python -c 'import secrets; print(secrets.token_hex(32))' >"$STATE/secret_key")
  fi
  MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat "$STATE/secret_key")
  export MLFLOW_FLASK_SERVER_SECRET_KEY
fi

# Password-free URLs: libpq takes the password from PGPASSWORD or ~/.pgpass, so none is written here.
BACKEND="postgresql://$PG_USER@$PG_HOST:$PG_PORT/$MLFLOW_DB"
AUTH_URI="postgresql://$PG_USER@$PG_HOST:$PG_PORT/$AUTH_DB"
cat >"$STATE/basic_auth.ini" <<EOF
[mlflow]
# Every signed-in user may read every experiment and model; writing needs a grant from the admin
# (or ownership: the user who creates an experiment or registered model may manage it).
default_permission = READ
database_uri = $AUTH_URI
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
# admin_password is deliberately absent: it comes from MLFLOW_AUTH_ADMIN_PASSWORD.
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = $AUTH_CACHE_TTL
EOF
export MLFLOW_AUTH_CONFIG_PATH="$STATE/basic_auth.ini"

echo "mlflow-server.sh: http://$HOST:$PORT  backend $BACKEND  auth $AUTH_URI  artifacts $ARTIFACTS" >&2
# shellcheck disable=SC2086  # MAMMO_MLFLOW_EXTRA_ARGS is a list of options
exec mlflow server \
  --backend-store-uri "$BACKEND" \
  --artifacts-destination "$ARTIFACTS" \
  --serve-artifacts \
  --app-name basic-auth \
  --host "$HOST" --port "$PORT" --workers "$WORKERS" \
  ${MAMMO_MLFLOW_EXTRA_ARGS:-}
