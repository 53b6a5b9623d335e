#!/usr/bin/env bash
# Start a PostgreSQL 15 server for the tests on 127.0.0.1 only, create the database
# wrfbatch_test with its own role, and write $TESTBED_DIR/postgres.env with
# WRFBATCH_TEST_POSTGRES_URL. Run as root; re-running keeps the server and the data.
#
# Usage: postgres-start.sh [-h|--help]
# Environment: TESTBED_DIR (/tmp/testbed), TESTBED_PG_PORT (5433),
#   TESTBED_TIMEOUT (60: seconds to wait for the server), TESTBED_NO_INSTALL=1 (never run apt).
# The server is for tests only: fsync is off, so a machine crash can lose its data.
set -Eeuo pipefail

SCRIPT_NAME=postgres-start
# shellcheck source=scripts/testbed-lib.sh
source "$(dirname "$(readlink -f "$0")")/testbed-lib.sh"

PG_VERSION=15
PG_BIN=/usr/lib/postgresql/$PG_VERSION/bin
PG_PORT=${TESTBED_PG_PORT:-5433}
PG_ROOT=$TESTBED_DIR/postgres
PG_DATA=$PG_ROOT/data
PG_SOCKET_DIR=$PG_ROOT/run
PG_LOG=$PG_ROOT/postgres.log
PG_PASSWORD_FILE=$PG_ROOT/role-password
DB_NAME=wrfbatch_test
DB_ROLE=wrfbatch_test

case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
  *) die "unknown argument: $1 (see --help)" ;;
esac
[[ "$PG_PORT" =~ ^[0-9]+$ ]] || die "TESTBED_PG_PORT must be a port number, got '$PG_PORT'"
require_root "initdb and the server run as the postgres user"

as_postgres() {
  runuser -u postgres -- "$@"
}

# Run one SQL statement as the postgres superuser over the server's Unix socket.
psql_admin() {
  as_postgres "$PG_BIN/psql" -h "$PG_SOCKET_DIR" -p "$PG_PORT" -d postgres \
    -v ON_ERROR_STOP=1 -X -q -t -A -c "$1"
}

server_running() {
  as_postgres "$PG_BIN/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1
}

prepare_directories() {
  mkdir -p "$TESTBED_DIR"
  chmod 755 "$TESTBED_DIR"
  install -d -m 700 -o postgres -g postgres "$PG_ROOT" "$PG_DATA" "$PG_SOCKET_DIR"
}

init_cluster() {
  [[ -s "$PG_DATA/PG_VERSION" ]] && return 0
  log "initialising data directory $PG_DATA"
  # Local socket connections trust the OS user (peer); TCP connections need a password.
  as_postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
    --auth-local=peer --auth-host=scram-sha-256 >"$PG_ROOT/initdb.log" 2>&1 \
    || die "initdb failed for $PG_DATA" "$PG_ROOT/initdb.log"
}

start_server() {
  if server_running; then
    log "postgres already running on 127.0.0.1:$PG_PORT"
    return 0
  fi
  require_port_free "$PG_PORT" postgres
  log "starting postgres on 127.0.0.1:$PG_PORT"
  # Durability settings are off because the database contains test data only.
  local options="-c listen_addresses=127.0.0.1 -c port=$PG_PORT"
  options+=" -c unix_socket_directories=$PG_SOCKET_DIR -c fsync=off"
  options+=" -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
  as_postgres "$PG_BIN/pg_ctl" start -D "$PG_DATA" -l "$PG_LOG" -w -t "$TESTBED_TIMEOUT" \
    -o "$options" >/dev/null || die "postgres did not start" "$PG_LOG"
}

role_password() {
  if [[ ! -s "$PG_PASSWORD_FILE" ]]; then
    (umask 077 && od -An -tx1 -N16 /dev/urandom | tr -d ' \n' > "$PG_PASSWORD_FILE")
  fi
  cat "$PG_PASSWORD_FILE"
}

create_role_and_database() {
  local password=$1
  # The password is hex digits, so it needs no SQL quoting beyond the single quotes.
  if [[ -z "$(psql_admin "SELECT 1 FROM pg_roles WHERE rolname = '$DB_ROLE'")" ]]; then
    psql_admin "CREATE ROLE $DB_ROLE LOGIN CREATEDB PASSWORD '$password'" >/dev/null
  else
    psql_admin "ALTER ROLE $DB_ROLE LOGIN CREATEDB PASSWORD '$password'" >/dev/null
  fi
  if [[ -z "$(psql_admin "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" ]]; then
    log "creating database $DB_NAME"
    psql_admin "CREATE DATABASE $DB_NAME OWNER $DB_ROLE" >/dev/null
  fi
}

write_env_file() {
  local password=$1 env_file=$TESTBED_DIR/postgres.env
  local url="postgresql+psycopg2://$DB_ROLE:$password@127.0.0.1:$PG_PORT/$DB_NAME"
  (umask 077 && printf 'WRFBATCH_TEST_POSTGRES_URL=%s\n' "$url" > "$env_file.new")
  mv -f "$env_file.new" "$env_file"
}

main() {
  apt_install "postgresql-$PG_VERSION"
  prepare_directories
  init_cluster
  start_server
  local password
  password=$(role_password)
  create_role_and_database "$password"
  write_env_file "$password"
  log "ready: database $DB_NAME on 127.0.0.1:$PG_PORT; URL in $TESTBED_DIR/postgres.env"
}

main
