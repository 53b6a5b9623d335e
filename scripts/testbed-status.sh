#!/usr/bin/env bash
# Print one line per testbed daemon, "ok" or "down", and exit 0 only when every daemon runs
# and passes its check. The daemons are munged, slurmctld, slurmd (node idle or busy) and
# sshd, plus mariadbd and slurmdbd when testbed.env sets TESTBED_SLURMDBD=1.
# Any user may run it.
#
# Usage: testbed-status.sh [--quiet]
#   --quiet  print nothing; only the exit status tells
# Environment: TESTBED_DIR (/tmp/testbed).
# shellcheck disable=SC2317  # the check functions run indirectly, through report()
set -uo pipefail

SCRIPT_NAME=testbed-status
# shellcheck source=scripts/testbed-lib.sh
source "$(dirname "$(readlink -f "$0")")/testbed-lib.sh"

TB=$TESTBED_DIR
QUIET=0
case "${1:-}" in
  "") ;;
  --quiet|-q) QUIET=1 ;;
  -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
  *) echo "$SCRIPT_NAME: unknown argument: $1 (see --help)" >&2; exit 2 ;;
esac
export SLURM_CONF=$TB/etc/slurm.conf
FAILED=0

env_value() {
  sed -n "s/^$1=//p" "$TB/testbed.env" 2>/dev/null | tail -n 1
}

# report NAME DETAIL COMMAND...: print "NAME ok" or "NAME down (DETAIL)" from COMMAND's status.
report() {
  local name=$1 detail=$2
  shift 2
  if "$@" >/dev/null 2>&1; then
    (( QUIET )) || printf '%-10s ok\n' "$name"
  else
    FAILED=1
    (( QUIET )) || printf '%-10s down (%s)\n' "$name" "$detail"
  fi
}

# Reading /proc/PID/exe needs the same user or root; others fall back to the pid alone.
daemon_running() {
  local pidfile=$1 exe=$2 pid
  pid_alive "$pidfile" "$exe" && return 0
  (( $(id -u) != 0 )) || return 1
  pid=$(head -n 1 "$pidfile" 2>/dev/null) && [[ "$pid" =~ ^[0-9]+$ && -d /proc/$pid ]]
}

munge_round_trip() {
  daemon_running "$TB/run/munged.pid" /usr/sbin/munged \
    && munge -n -S "$TB/run/munge.socket" | unmunge -S "$TB/run/munge.socket"
}

controller_up() {
  daemon_running "$TB/run/slurmctld.pid" /usr/sbin/slurmctld \
    && timeout 15 scontrol ping | grep -q 'is UP'
}

node_up() {
  local node state
  node=$(env_value TESTBED_SLURM_NODE)
  daemon_running "$TB/run/slurmd.pid" /usr/sbin/slurmd || return 1
  state=$(timeout 15 sinfo -h -n "${node:-node01}" -o %T | head -n 1)
  [[ "$state" =~ ^(idle|mixed|allocated|completing)$ ]]
}

# The MariaDB pid file is readable by root and mysql only, so other users check the port alone.
mariadbd_up() {
  local pidfile=$TB/run/mysql/mysqld.pid
  if [[ -r "$pidfile" ]]; then
    daemon_running "$pidfile" /usr/sbin/mariadbd || return 1
  fi
  tcp_port_open 3307
}

slurmdbd_up() {
  daemon_running "$TB/run/slurmdbd.pid" /usr/sbin/slurmdbd && tcp_port_open 6819
}

sshd_up() {
  daemon_running "$TB/run/sshd.pid" /usr/sbin/sshd && tcp_port_open "$(env_value TESTBED_SSH_PORT)"
}

if [[ ! -f "$TB/testbed.env" ]]; then
  (( QUIET )) || echo "testbed    down ($TB/testbed.env not found: run scripts/testbed-start.sh)"
  exit 1
fi
report munged "munge round trip failed" munge_round_trip
if [[ "$(env_value TESTBED_SLURMDBD)" == 1 ]]; then
  report mariadbd "no live process or port 3307 closed" mariadbd_up
  report slurmdbd "no live process or port 6819 closed" slurmdbd_up
fi
report slurmctld "scontrol ping failed" controller_up
report slurmd "node not idle, mixed or allocated" node_up
report sshd "no live process or port closed" sshd_up
exit "$FAILED"
