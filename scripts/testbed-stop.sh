#!/usr/bin/env bash
# Stop the testbed that testbed-start.sh started: cancel the Slurm jobs, then stop each
# daemon by its pid file (TERM, then KILL after TESTBED_TIMEOUT seconds). Run as root.
# The test PostgreSQL server has its own script, postgres-stop.sh.
#
# Usage: testbed-stop.sh [--purge]
#   --purge  also delete Slurm state, spool, logs and the MariaDB data, so the next start
#            begins with empty queues. Keys, configuration files and the user stay.
# Environment: TESTBED_DIR (/tmp/testbed), TESTBED_TIMEOUT (60: seconds to wait per daemon).
set -Euo pipefail

SCRIPT_NAME=testbed-stop
# shellcheck source=scripts/testbed-lib.sh
source "$(dirname "$(readlink -f "$0")")/testbed-lib.sh"

TB=$TESTBED_DIR
PURGE=0
case "${1:-}" in
  "") ;;
  --purge) PURGE=1 ;;
  -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
  *) die "unknown argument: $1 (see --help)" ;;
esac
require_root "the daemons run as root"
hold_testbed_lock bash "$0" "$@"
export SLURM_CONF=$TB/etc/slurm.conf

controller_up() {
  [[ -f "$SLURM_CONF" ]] && pid_alive "$TB/run/slurmctld.pid" /usr/sbin/slurmctld \
    && timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP'
}

# Cancel jobs while slurmctld and slurmd still run, so no job outlives its slurmstepd.
cancel_jobs() {
  local job_ids i
  controller_up || return 0
  job_ids=$(timeout 10 squeue -h -t PD,R,CG,S,CF -o %A 2>/dev/null | sort -u | tr '\n' ' ' || true)
  [[ -n "${job_ids// }" ]] || return 0
  log "cancelling jobs: $job_ids"
  # shellcheck disable=SC2086  # job_ids is a list of numbers split on purpose
  timeout 20 scancel $job_ids 2>/dev/null || true
  for ((i = 0; i < TESTBED_TIMEOUT * 2; i++)); do
    [[ -z "$(timeout 10 squeue -h -t R,CG -o %A 2>/dev/null)" ]] && return 0
    sleep 0.5
  done
  log "jobs still running or completing after ${TESTBED_TIMEOUT}s"
}

stop_daemons() {
  stop_pidfile sshd "$TB/run/sshd.pid" /usr/sbin/sshd
  stop_pidfile slurmd "$TB/run/slurmd.pid" /usr/sbin/slurmd
  stop_pidfile slurmctld "$TB/run/slurmctld.pid" /usr/sbin/slurmctld
  stop_pidfile slurmdbd "$TB/run/slurmdbd.pid" /usr/sbin/slurmdbd
  stop_pidfile mariadbd "$TB/run/mysql/mysqld.pid" /usr/sbin/mariadbd
  stop_pidfile munged "$TB/run/munged.pid" /usr/sbin/munged
  rm -f "$TB/run/munge.socket" "$TB/run/munge.socket.lock"
}

# Job processes that escaped their step are reported, not killed: they may not be ours.
report_leftover_steps() {
  local pids
  pids=$(ps -eo pid=,stat=,comm= | awk '$3 ~ /^slurmstepd/ && $2 !~ /^Z/ {print $1}' | tr '\n' ' ')
  [[ -z "${pids// }" ]] || log "WARNING: slurmstepd processes still running: $pids"
}

cancel_jobs
stop_daemons
report_leftover_steps
if (( PURGE )); then
  log "deleting Slurm state, spool, logs and MariaDB data under $TB"
  rm -rf "${TB:?}/state" "${TB:?}/spool" "${TB:?}/log" "${TB:?}/mysql" "${TB:?}/run"
fi
log "stopped"
