#!/usr/bin/env bash
# Run the test suite against real components: install the project with its test extras
# into the current Python, start the Slurm/sshd/MPI testbed and the test PostgreSQL
# server (both re-use what already runs), then run pytest with the given arguments.
# Run as root on Debian 12. Exits with pytest's status, so "no tests collected" (5) fails too.
#
# Usage: scripts/run-tests.sh [PYTEST_ARGS...]     e.g. scripts/run-tests.sh -m "not slow"
# Environment: PYTHON (python3: the interpreter to install into and test with),
#   TESTBED_DIR (/tmp/testbed) and the other variables of testbed-start.sh.
set -Eeuo pipefail

SCRIPT_NAME=run-tests
SCRIPT_DIR=$(dirname "$(readlink -f "$0")")
PROJECT_ROOT=$(dirname "$SCRIPT_DIR")
# shellcheck source=scripts/testbed-lib.sh
source "$SCRIPT_DIR/testbed-lib.sh"
PYTHON=${PYTHON:-python3}

require_root "it installs packages and starts the testbed daemons"
command -v "$PYTHON" >/dev/null || die "Python interpreter '$PYTHON' not found; set PYTHON"
cd "$PROJECT_ROOT"

log "installing the project with its test extras into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
"$PYTHON" -m pip install --quiet --disable-pip-version-check -e '.[test]' \
  || die "pip install -e '.[test]' failed for $PYTHON"
bash "$SCRIPT_DIR/testbed-start.sh" || die "testbed-start.sh failed"
bash "$SCRIPT_DIR/postgres-start.sh" || die "postgres-start.sh failed"

url=$(sed -n 's/^WRFBATCH_TEST_POSTGRES_URL=//p' "$TESTBED_DIR/postgres.env")
[[ -n "$url" ]] || die "WRFBATCH_TEST_POSTGRES_URL missing from $TESTBED_DIR/postgres.env"
export WRFBATCH_TEST_POSTGRES_URL=$url
export TESTBED_DIR
# Slurm clients without a configuration look up the controller in DNS.
export SLURM_CONF=$TESTBED_DIR/etc/slurm.conf

log "running: $PYTHON -m pytest $*"
status=0
"$PYTHON" -m pytest "$@" || status=$?
if (( status != 0 )); then
  log "pytest failed with exit status $status"
fi
exit "$status"
