#!/usr/bin/env bash
# Stop the test PostgreSQL server that postgres-start.sh started.
#
# Usage: postgres-stop.sh [--purge]
#   --purge  also delete its data directory, role password and postgres.env
# Environment: TESTBED_DIR (/tmp/testbed), TESTBED_TIMEOUT (60: seconds to wait).
set -Eeuo pipefail

SCRIPT_NAME=postgres-stop
# shellcheck source=scripts/testbed-lib.sh
source "$(dirname "$(readlink -f "$0")")/testbed-lib.sh"

PG_BIN=/usr/lib/postgresql/15/bin
PG_ROOT=$TESTBED_DIR/postgres
PURGE=0
case "${1:-}" in
  "") ;;
  --purge) PURGE=1 ;;
  -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
  *) die "unknown argument: $1 (see --help)" ;;
esac
require_root "the server runs as the postgres user"

if [[ -s "$PG_ROOT/data/PG_VERSION" ]] \
    && runuser -u postgres -- "$PG_BIN/pg_ctl" status -D "$PG_ROOT/data" >/dev/null 2>&1; then
  log "stopping postgres"
  # Fast mode disconnects open sessions instead of waiting for the clients to close them.
  runuser -u postgres -- "$PG_BIN/pg_ctl" stop -D "$PG_ROOT/data" -m fast -w \
    -t "$TESTBED_TIMEOUT" >/dev/null || die "postgres did not stop" "$PG_ROOT/postgres.log"
fi
if (( PURGE )); then
  log "deleting $PG_ROOT and $TESTBED_DIR/postgres.env"
  rm -rf "${PG_ROOT:?}" "$TESTBED_DIR/postgres.env"
fi
log "stopped"
