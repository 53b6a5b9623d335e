# shellcheck shell=bash
# Helpers shared by the testbed and PostgreSQL scripts under scripts/. Source it, do not run it.
# Callers set SCRIPT_NAME (used in messages) before sourcing.

TESTBED_DIR=${TESTBED_DIR:-/tmp/testbed}
TESTBED_TIMEOUT=${TESTBED_TIMEOUT:-60}
SCRIPT_NAME=${SCRIPT_NAME:-testbed}
# Root shells without sbin in PATH still find the daemons; the caller's order comes first.
export PATH=$PATH:/usr/sbin:/usr/bin:/sbin:/bin
_LIB_T0=${EPOCHREALTIME/[.,]/}

# Print a message with the seconds elapsed since the script started.
log() {
  local elapsed_ds=$(( (${EPOCHREALTIME/[.,]/} - _LIB_T0) / 100000 ))
  printf '[%s %d.%ds] %s\n' "$SCRIPT_NAME" $((elapsed_ds / 10)) $((elapsed_ds % 10)) "$*"
}

# die MESSAGE [LOGFILE...]: print MESSAGE and the last lines of each LOGFILE, then exit 1.
die() {
  local message=$1 logfile
  shift
  echo "$SCRIPT_NAME: ERROR: $message" >&2
  for logfile in "$@"; do
    if [[ -s "$logfile" ]]; then
      echo "---- last 30 lines of $logfile:" >&2
      tail -n 30 "$logfile" >&2
    fi
  done
  exit 1
}

require_root() {
  [[ $(id -u) == 0 ]] || die "must run as root: $1"
}

# hold_testbed_lock COMMAND...: run COMMAND (the calling script) under an exclusive lock on
# $TESTBED_DIR/.lock and exit with its status, so that runs of testbed-start.sh and
# testbed-stop.sh never interleave.
# Scripts that a locked script runs (start --clean runs stop) inherit the lock and skip this.
hold_testbed_lock() {
  local status=0
  [[ ${TESTBED_LOCK_HELD:-0} == 1 ]] && return 0
  mkdir -p "$TESTBED_DIR"
  # --close keeps the lock file descriptor out of the daemons that the script starts.
  TESTBED_LOCK_HELD=1 flock --close --conflict-exit-code 75 --wait 600 "$TESTBED_DIR/.lock" \
    "$@" || status=$?
  (( status != 75 )) || die "timed out after 600 s waiting for another start or stop of $TESTBED_DIR"
  exit "$status"
}

# process_runs PID EXE: PID is a live process running EXE. Debian installs slurmctld and
# slurmd as alternatives links, so EXE is resolved first.
process_runs() {
  [[ "$1" =~ ^[0-9]+$ ]] || return 1
  [[ "$(readlink "/proc/$1/exe" 2>/dev/null)" == "$(readlink -f "$2")" ]]
}

# pid_alive PIDFILE EXE: the pid in PIDFILE is a live process running EXE.
pid_alive() {
  local pid
  # The daemon may delete its pid file at any moment while it exits.
  pid=$(head -n 1 "$1" 2>/dev/null) || return 1
  process_runs "$pid" "$2"
}

# stop_pidfile NAME PIDFILE EXE: send TERM to that pid only, then KILL after TESTBED_TIMEOUT s.
stop_pidfile() {
  local name=$1 pidfile=$2 exe=$3 pid i
  if ! pid_alive "$pidfile" "$exe"; then
    rm -f "$pidfile"
    return 0
  fi
  pid=$(head -n 1 "$pidfile")
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < TESTBED_TIMEOUT * 4; i++)); do
    process_runs "$pid" "$exe" || break
    sleep 0.25
  done
  if process_runs "$pid" "$exe"; then
    log "$name (pid $pid) still running after ${TESTBED_TIMEOUT}s: sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  # A daemon started since then may have written its own pid into the file: keep that one.
  if [[ "$(head -n 1 "$pidfile" 2>/dev/null)" == "$pid" ]]; then
    rm -f "$pidfile"
  fi
}

# wait_until WHAT LOGFILE COMMAND...: poll COMMAND every 0.25 s, fail after TESTBED_TIMEOUT s.
wait_until() {
  local what=$1 logfile=$2 deadline
  shift 2
  deadline=$(( SECONDS + TESTBED_TIMEOUT ))
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < deadline )) || die "timed out after ${TESTBED_TIMEOUT}s waiting for $what" "$logfile"
    sleep 0.25
  done
}

tcp_port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# require_port_free PORT NAME: nothing may listen on 127.0.0.1:PORT before NAME starts.
require_port_free() {
  ! tcp_port_open "$1" || die "127.0.0.1:$1 is already in use, so $2 cannot start there"
}

package_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

# apt_install PACKAGE...: install the missing packages without letting their maintainer
# scripts start system daemons (policy-rc.d exit 101 makes invoke-rc.d skip every start).
apt_install() {
  local missing=() package apt_log policy_created=0 status=0
  for package in "$@"; do
    package_installed "$package" || missing+=("$package")
  done
  (( ${#missing[@]} )) || return 0
  [[ ${TESTBED_NO_INSTALL:-0} == 1 ]] && die "missing packages and TESTBED_NO_INSTALL=1: ${missing[*]}"
  log "installing with apt: ${missing[*]}"
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    policy_created=1
  fi
  apt_log=$(mktemp /tmp/"$SCRIPT_NAME"-apt.XXXXXX)
  export DEBIAN_FRONTEND=noninteractive
  if [[ ${TESTBED_APT_UPDATED:-0} != 1 ]]; then
    apt-get update -qq >"$apt_log" 2>&1 || status=$?
    export TESTBED_APT_UPDATED=1
  fi
  if (( status == 0 )); then
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$apt_log" 2>&1 || status=$?
  fi
  (( policy_created )) && rm -f /usr/sbin/policy-rc.d
  (( status == 0 )) || die "apt-get failed (exit $status) for: ${missing[*]}" "$apt_log"
  rm -f "$apt_log"
}

# replace_if_changed NEW TARGET: move NEW over TARGET unless equal; return 0 when TARGET changed.
replace_if_changed() {
  if [[ -f "$2" ]] && cmp -s "$1" "$2"; then
    rm -f "$1"
    return 1
  fi
  mv -f "$1" "$2"
}
