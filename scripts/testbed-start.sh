#!/usr/bin/env bash
# Start a one-node Slurm cluster with SSH access and MPI on this machine, for the
# integration tests. Debian 12, run as root, no systemd needed. Every daemon accepts
# connections from 127.0.0.1 only. Re-running adopts the daemons that already run
# (tracked by pid files under $TESTBED_DIR/run) and restarts only those whose
# configuration changed.
#
# Starts munged, MariaDB and slurmdbd (unless --without-slurmdbd), slurmctld, slurmd
# (node node01) and sshd on 127.0.0.1:$TESTBED_SSH_PORT (key only, user $TESTBED_USER),
# then writes the connection details to $TESTBED_DIR/testbed.env.
#
# Usage: testbed-start.sh [--with-slurmdbd | --without-slurmdbd] [--clean] [--no-install]
#   --with-slurmdbd     run MariaDB and slurmdbd so that sacct works (the default)
#   --without-slurmdbd  skip them, so sacct fails; stops them if they run
#   --clean             stop everything and wipe Slurm and database state first
#   --no-install        never run apt-get; fail when a package is missing
# Environment: TESTBED_DIR (/tmp/testbed), TESTBED_SSH_PORT (2222), TESTBED_USER (wrfuser),
#   TESTBED_CPUS (4: CPUs that Slurm advertises, may exceed the real count),
#   TESTBED_SLURMDBD (1), TESTBED_TIMEOUT (60: seconds to wait for each daemon).
# Stop with testbed-stop.sh; check with testbed-status.sh.
set -Eeuo pipefail

SCRIPT_NAME=testbed-start
SCRIPT_DIR=$(dirname "$(readlink -f "$0")")
# shellcheck source=scripts/testbed-lib.sh
source "$SCRIPT_DIR/testbed-lib.sh"
hold_testbed_lock bash "$0" "$@"
trap 'die "command failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

TB=$TESTBED_DIR
SSH_PORT=${TESTBED_SSH_PORT:-2222}
TB_USER=${TESTBED_USER:-wrfuser}
NODE=node01
NODE_CPUS=${TESTBED_CPUS:-4}
WITH_SLURMDBD=${TESTBED_SLURMDBD:-1}
CLUSTER_NAME=testbed
SLURMCTLD_PORT=6817
SLURMD_PORT=6818
SLURMDBD_PORT=6819
MARIADB_PORT=3307
# Library that turns wildcard binds into loopback binds for Slurm daemons and job tasks.
SHIM=$TB/lib/libloopback-bind.so
CONFIG_MARKER="# written by testbed-start.sh; rewritten on every start"
CLEAN=0
SLURM_CONF_CHANGED=0
SLURMDBD_CONF_CHANGED=0
SSHD_CONF_CHANGED=0
USER_HOME=
USER_GROUP=

usage() {
  sed -n '2,20p' "$0"
}

parse_args() {
  local arg
  for arg in "$@"; do
    case "$arg" in
      --with-slurmdbd) WITH_SLURMDBD=1 ;;
      --without-slurmdbd) WITH_SLURMDBD=0 ;;
      --clean) CLEAN=1 ;;
      --no-install) export TESTBED_NO_INSTALL=1 ;;
      -h|--help) usage; exit 0 ;;
      *) die "unknown argument: $arg (see --help)" ;;
    esac
  done
  [[ "$SSH_PORT" =~ ^[0-9]+$ ]] || die "TESTBED_SSH_PORT must be a port number, got '$SSH_PORT'"
  [[ "$NODE_CPUS" =~ ^[1-9][0-9]*$ ]] || die "TESTBED_CPUS must be a positive integer, got '$NODE_CPUS'"
  [[ "$TB_USER" =~ ^[a-z_][a-z0-9_-]*$ ]] || die "TESTBED_USER is not a valid user name: '$TB_USER'"
  [[ "$WITH_SLURMDBD" =~ ^[01]$ ]] || die "TESTBED_SLURMDBD must be 0 or 1, got '$WITH_SLURMDBD'"
}

install_packages() {
  local packages=(slurmctld slurmd slurm-client munge openssh-server openssh-client
    openmpi-bin libopenmpi-dev gfortran gcc libc6-dev python3-mpi4py python3-netcdf4
    python3-venv iproute2)
  if (( WITH_SLURMDBD )); then
    packages+=(slurmdbd mariadb-server)
  fi
  apt_install "${packages[@]}"
}

# Every user must be able to traverse to the munge socket and the library under $TB.
check_directory_access() {
  local dir=$TB
  while [[ "$dir" != / ]]; do
    (( 8#$(stat -c %a "$dir") & 1 )) \
      || die "$dir is not searchable by other users; set TESTBED_DIR to a path under /tmp"
    dir=$(dirname "$dir")
  done
}

prepare_layout() {
  mkdir -p "$TB"/{etc,run,log,lib,bin,ssh,munge,state/slurmctld,spool/slurmd}
  chmod 755 "$TB" "$TB"/{etc,run,log,lib,bin,ssh}
  chmod 700 "$TB/state" "$TB/munge"
  check_directory_access
  install -d -m 755 /run/sshd
  # slurmd looks up NodeHostname, so the short host name must resolve to a loopback address.
  local host
  host=$(hostname -s)
  if ! getent ahostsv4 "$host" | awk '{print $1}' | grep -q '^127\.'; then
    log "host name $host does not resolve to 127.x: adding it to /etc/hosts"
    echo "127.0.0.1 $host # added by testbed-start.sh" >> /etc/hosts
  fi
}

prepare_user() {
  if ! id "$TB_USER" >/dev/null 2>&1; then
    log "creating user $TB_USER"
    useradd -m -s /bin/bash "$TB_USER"
  fi
  # sshd with UsePAM no rejects accounts whose password field starts with '!' (locked).
  if [[ $(getent shadow "$TB_USER" | cut -d: -f2) == '!'* ]]; then
    usermod -p '*' "$TB_USER"
  fi
  USER_HOME=$(getent passwd "$TB_USER" | cut -d: -f6)
  USER_GROUP=$(id -gn "$TB_USER")
  install -d -m 700 -o "$TB_USER" -g "$USER_GROUP" "$USER_HOME/.ssh"
  install -d -m 755 -o "$TB_USER" -g "$USER_GROUP" "$USER_HOME/.openmpi"
  # Open MPI 4.1: TCP on loopback only, and ranks yield the CPU while they wait, because
  # the node advertises more CPUs than it has and busy polling starves the other ranks.
  printf '%s\n' 'btl_tcp_if_include = lo' 'oob_tcp_if_include = lo' 'mpi_yield_when_idle = 1' \
    > "$USER_HOME/.openmpi/mca-params.conf"
  chown "$TB_USER:$USER_GROUP" "$USER_HOME/.openmpi/mca-params.conf"
}

create_keys() {
  if [[ ! -s "$TB/munge/munge.key" ]]; then
    mungekey --create --keyfile="$TB/munge/munge.key" >/dev/null
  fi
  chown root:root "$TB/munge/munge.key"
  chmod 400 "$TB/munge/munge.key"
  local key
  for key in ssh_host_ed25519_key client_key; do
    [[ -s "$TB/ssh/$key" ]] || ssh-keygen -q -t ed25519 -N '' -C "testbed $key" -f "$TB/ssh/$key"
    chmod 600 "$TB/ssh/$key"
  done
  local authorized=$USER_HOME/.ssh/authorized_keys public_key
  public_key=$(<"$TB/ssh/client_key.pub")
  touch "$authorized"
  grep -qxF "$public_key" "$authorized" || echo "$public_key" >> "$authorized"
  chown "$TB_USER:$USER_GROUP" "$authorized"
  chmod 600 "$authorized"
  echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 "$TB/ssh/ssh_host_ed25519_key.pub")" \
    > "$TB/ssh/known_hosts"
  chmod 644 "$TB/ssh/known_hosts"
}

build_shim() {
  gcc -shared -fPIC -O2 -Wall -o "$SHIM.new" "$SCRIPT_DIR/loopback-bind.c" -ldl \
    || die "gcc could not build $SHIM from $SCRIPT_DIR/loopback-bind.c"
  chmod 755 "$SHIM.new"
  # A changed library makes the Slurm daemons restart, because adopt_or_stop compares
  # their memory maps with this path.
  if replace_if_changed "$SHIM.new" "$SHIM"; then
    log "built $SHIM"
  fi
}

write_task_prolog() {
  cat > "$TB/etc/task-prolog.sh.new" <<END_OF_PROLOG
#!/bin/sh
$CONFIG_MARKER
# Slurm runs this before each task and applies the "export" lines that it prints, so every
# job task, and each srun and mpirun inside it, binds its listening sockets to loopback.
case ":\${LD_PRELOAD:-}:" in
  *":$SHIM:"*) ;;
  *) echo "export LD_PRELOAD=$SHIM\${LD_PRELOAD:+:\$LD_PRELOAD}" ;;
esac
END_OF_PROLOG
  chmod 755 "$TB/etc/task-prolog.sh.new"
  replace_if_changed "$TB/etc/task-prolog.sh.new" "$TB/etc/task-prolog.sh" || true
}

accounting_settings() {
  if (( WITH_SLURMDBD )); then
    printf '%s\n' "AccountingStorageType=accounting_storage/slurmdbd" \
      "AccountingStorageHost=127.0.0.1" "AccountingStoragePort=$SLURMDBD_PORT" \
      "# Slurm 22.05 takes the munge socket for slurmdbd from AccountingStoragePass." \
      "AccountingStoragePass=$TB/run/munge.socket" \
      "JobAcctGatherType=jobacct_gather/linux" "JobAcctGatherFrequency=30"
  else
    printf '%s\n' "AccountingStorageType=accounting_storage/none" \
      "JobAcctGatherType=jobacct_gather/none"
  fi
}

write_slurm_conf() {
  local host
  host=$(hostname -s)
  cat > "$TB/etc/slurm.conf.new" <<END_OF_CONF
$CONFIG_MARKER
ClusterName=$CLUSTER_NAME
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$SLURMCTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$TB/run/munge.socket
StateSaveLocation=$TB/state/slurmctld
SlurmdSpoolDir=$TB/spool/slurmd
SlurmctldPidFile=$TB/run/slurmctld.pid
SlurmdPidFile=$TB/run/slurmd.pid
SlurmctldLogFile=$TB/log/slurmctld.log
SlurmdLogFile=$TB/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
# No cgroup delegation without systemd: track job processes through /proc.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
TaskProlog=$TB/etc/task-prolog.sh
$(accounting_settings)
JobCompType=jobcomp/filetxt
JobCompLoc=$TB/log/jobcomp.txt
SchedulerType=sched/backfill
# Start a batch job right after submission instead of after the default 3 s delay.
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
# Reject impossible requests at submission instead of leaving them pending.
EnforcePartLimits=ALL
ReturnToService=2
# Let slurmd advertise more CPUs than the machine has, so 4-rank MPI jobs fit on 2 cores.
SlurmdParameters=config_overrides
# Keep finished jobs visible to squeue and scontrol for an hour (the Slurm default is 300 s).
MinJobAge=3600
KillWait=5
InactiveLimit=0
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$NODE NodeHostname=$host NodeAddr=127.0.0.1 CPUs=$NODE_CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$NODE_CPUS ThreadsPerCore=1 RealMemory=16000 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=60 DefaultTime=10 State=UP
PartitionName=long Nodes=$NODE Default=NO MaxTime=INFINITE DefaultTime=60 State=UP
END_OF_CONF
  chmod 644 "$TB/etc/slurm.conf.new"
  if replace_if_changed "$TB/etc/slurm.conf.new" "$TB/etc/slurm.conf"; then
    SLURM_CONF_CHANGED=1
  fi
  link_into_etc_slurm slurm.conf
}

# Slurm commands of every user, ssh sessions included, read /etc/slurm/slurm.conf.
link_into_etc_slurm() {
  local target=/etc/slurm/$1 source=$TB/etc/$1 backup
  mkdir -p /etc/slurm
  [[ -L "$target" && "$(readlink "$target")" == "$source" ]] && return 0
  if [[ -e "$target" || -L "$target" ]]; then
    backup="$target.bak-$(date +%Y%m%d%H%M%S)"
    log "moving the existing $target to $backup"
    mv "$target" "$backup"
  fi
  ln -s "$source" "$target"
}

# The MariaDB password of the slurm database user, created once and kept in a root-only file.
slurmdbd_db_password() {
  local file=$TB/etc/slurmdbd-db-password
  if [[ ! -s "$file" ]]; then
    (umask 077 && od -An -tx1 -N12 /dev/urandom | tr -d ' \n' > "$file")
  fi
  cat "$file"
}

write_mariadb_conf() {
  mkdir -p "$TB/mysql/data" "$TB/run/mysql" "$TB/log/mysql"
  chown -R mysql:mysql "$TB/mysql" "$TB/run/mysql" "$TB/log/mysql"
  cat > "$TB/etc/my.cnf" <<END_OF_CONF
$CONFIG_MARKER
[mysqld]
datadir=$TB/mysql/data
socket=$TB/run/mysql/mysqld.sock
pid-file=$TB/run/mysql/mysqld.pid
bind-address=127.0.0.1
port=$MARIADB_PORT
user=mysql
log-error=$TB/log/mysql/mysqld.log
skip-name-resolve
innodb_buffer_pool_size=256M
innodb_log_file_size=64M
innodb_lock_wait_timeout=900
END_OF_CONF
  chmod 644 "$TB/etc/my.cnf"
}

write_slurmdbd_conf() {
  local password
  password=$(slurmdbd_db_password)
  (umask 077 && cat > "$TB/etc/slurmdbd.conf.new" <<END_OF_CONF
$CONFIG_MARKER
AuthType=auth/munge
AuthInfo=socket=$TB/run/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$SLURMDBD_PORT
SlurmUser=root
DebugLevel=info
LogFile=$TB/log/slurmdbd.log
PidFile=$TB/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MARIADB_PORT
StorageUser=slurm
StoragePass=$password
StorageLoc=slurm_acct_db
END_OF_CONF
  )
  if replace_if_changed "$TB/etc/slurmdbd.conf.new" "$TB/etc/slurmdbd.conf"; then
    SLURMDBD_CONF_CHANGED=1
  fi
  link_into_etc_slurm slurmdbd.conf
}

write_sshd_config() {
  cat > "$TB/ssh/sshd_config.new" <<END_OF_CONF
$CONFIG_MARKER
ListenAddress 127.0.0.1:$SSH_PORT
HostKey $TB/ssh/ssh_host_ed25519_key
PidFile $TB/run/sshd.pid
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
UsePAM no
PermitRootLogin no
AllowUsers $TB_USER
AuthorizedKeysFile .ssh/authorized_keys
StrictModes yes
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PermitTunnel no
PrintMotd no
UseDNS no
LogLevel VERBOSE
Subsystem sftp internal-sftp
END_OF_CONF
  if replace_if_changed "$TB/ssh/sshd_config.new" "$TB/ssh/sshd_config"; then
    SSHD_CONF_CHANGED=1
  fi
  /usr/sbin/sshd -t -f "$TB/ssh/sshd_config" || die "sshd -t rejected $TB/ssh/sshd_config"
}

# shim_loaded PIDFILE: the daemon in PIDFILE has the loopback library mapped.
shim_loaded() {
  grep -qF "$SHIM" "/proc/$(head -n 1 "$1")/maps" 2>/dev/null
}

# adopt_or_stop NAME PIDFILE EXE CHANGED: keep a running daemon unless its configuration
# changed (CHANGED=1) or it runs without the loopback library; return 0 when it runs on.
adopt_or_stop() {
  local name=$1 pidfile=$2 exe=$3 changed=$4
  pid_alive "$pidfile" "$exe" || return 1
  if (( changed )); then
    log "$name: configuration changed, restarting"
  elif ! shim_loaded "$pidfile"; then
    log "$name: running without $SHIM, restarting"
  else
    return 0
  fi
  stop_pidfile "$name" "$pidfile" "$exe"
  return 1
}

start_munged() {
  local logfile=$TB/log/munged.log
  if ! pid_alive "$TB/run/munged.pid" /usr/sbin/munged; then
    log "starting munged"
    rm -f "$TB/run/munge.socket" "$TB/run/munge.socket.lock"
    /usr/sbin/munged --key-file="$TB/munge/munge.key" --socket="$TB/run/munge.socket" \
      --pid-file="$TB/run/munged.pid" --log-file="$logfile" \
      --seed-file="$TB/munge/munged.seed" --num-threads=4 </dev/null >>"$logfile" 2>&1 \
      || die "munged did not start" "$logfile"
  fi
  wait_until "munged (munge and unmunge round trip)" "$logfile" \
    bash -c "munge -n -S '$TB/run/munge.socket' | unmunge -S '$TB/run/munge.socket'"
}

start_mariadb() {
  local logfile=$TB/log/mysql/mysqld.log socket=$TB/run/mysql/mysqld.sock password
  if ! pid_alive "$TB/run/mysql/mysqld.pid" /usr/sbin/mariadbd; then
    require_port_free "$MARIADB_PORT" mariadbd
    if [[ ! -d "$TB/mysql/data/mysql" ]]; then
      log "initialising the MariaDB data directory"
      mariadb-install-db --defaults-file="$TB/etc/my.cnf" --auth-root-authentication-method=socket \
        >"$TB/log/mysql/install.log" 2>&1 || die "mariadb-install-db failed" "$TB/log/mysql/install.log"
    fi
    log "starting mariadbd on 127.0.0.1:$MARIADB_PORT"
    setsid /usr/sbin/mariadbd --defaults-file="$TB/etc/my.cnf" </dev/null >>"$logfile" 2>&1 &
  fi
  wait_until "mariadbd" "$logfile" mariadb-admin --socket="$socket" ping
  password=$(slurmdbd_db_password)
  mariadb --socket="$socket" -uroot <<END_OF_SQL || die "mariadbd: could not create the slurm user" "$logfile"
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
END_OF_SQL
}

start_slurmdbd() {
  local logfile=$TB/log/slurmdbd.log pidfile=$TB/run/slurmdbd.pid
  if ! adopt_or_stop slurmdbd "$pidfile" /usr/sbin/slurmdbd "$SLURMDBD_CONF_CHANGED"; then
    require_port_free "$SLURMDBD_PORT" slurmdbd
    log "starting slurmdbd on 127.0.0.1:$SLURMDBD_PORT"
    LD_PRELOAD=$SHIM /usr/sbin/slurmdbd </dev/null >>"$logfile" 2>&1 \
      || die "slurmdbd did not start" "$logfile"
  fi
  wait_until "slurmdbd on 127.0.0.1:$SLURMDBD_PORT" "$logfile" tcp_port_open "$SLURMDBD_PORT"
}

start_slurmctld() {
  local logfile=$TB/log/slurmctld.log pidfile=$TB/run/slurmctld.pid
  if ! adopt_or_stop slurmctld "$pidfile" /usr/sbin/slurmctld "$SLURM_CONF_CHANGED"; then
    require_port_free "$SLURMCTLD_PORT" slurmctld
    log "starting slurmctld on 127.0.0.1:$SLURMCTLD_PORT"
    LD_PRELOAD=$SHIM /usr/sbin/slurmctld </dev/null >>"$logfile" 2>&1 \
      || die "slurmctld did not start" "$logfile"
  fi
  wait_until "slurmctld (scontrol ping)" "$logfile" bash -c 'scontrol ping | grep -q "is UP"'
}

node_ready() {
  local state
  state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n 1)
  case "$state" in
    idle|mixed|allocated|completing) return 0 ;;
    *drain*|down*|fail*) scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  return 1
}

start_slurmd() {
  local logfile=$TB/log/slurmd.log pidfile=$TB/run/slurmd.pid
  # slurmstepd inherits LD_PRELOAD from slurmd, which covers the PMIx server of each step.
  if ! adopt_or_stop slurmd "$pidfile" /usr/sbin/slurmd "$SLURM_CONF_CHANGED"; then
    require_port_free "$SLURMD_PORT" slurmd
    log "starting slurmd (node $NODE) on 127.0.0.1:$SLURMD_PORT"
    LD_PRELOAD=$SHIM /usr/sbin/slurmd -N "$NODE" </dev/null >>"$logfile" 2>&1 \
      || die "slurmd did not start" "$logfile"
  fi
  wait_until "slurmd: node $NODE idle in sinfo" "$logfile" node_ready
}

register_accounts() {
  # sacctmgr add fails when the entry exists, so only the final check decides.
  sacctmgr -i -Q add cluster "$CLUSTER_NAME" >/dev/null 2>&1 || true
  sacctmgr -i -Q add account wrf Description=wrf Organization=testbed >/dev/null 2>&1 || true
  sacctmgr -i -Q add user "$TB_USER,root" Account=wrf >/dev/null 2>&1 || true
  sacctmgr -n -P list assoc user="$TB_USER" format=user | grep -qx "$TB_USER" \
    || die "slurmdbd: sacctmgr could not register user $TB_USER" "$TB/log/slurmdbd.log"
}

ssh_as_user() {
  ssh -p "$SSH_PORT" -i "$TB/ssh/client_key" -o BatchMode=yes -o IdentitiesOnly=yes \
    -o UserKnownHostsFile="$TB/ssh/known_hosts" -o StrictHostKeyChecking=yes \
    -o LogLevel=ERROR "$TB_USER@127.0.0.1" "$@"
}

start_sshd() {
  local logfile=$TB/log/sshd.log pidfile=$TB/run/sshd.pid output
  if (( SSHD_CONF_CHANGED )) && pid_alive "$pidfile" /usr/sbin/sshd; then
    log "sshd: configuration changed, restarting"
    stop_pidfile sshd "$pidfile" /usr/sbin/sshd
  fi
  if ! pid_alive "$pidfile" /usr/sbin/sshd; then
    require_port_free "$SSH_PORT" sshd
    log "starting sshd on 127.0.0.1:$SSH_PORT"
    /usr/sbin/sshd -f "$TB/ssh/sshd_config" -E "$logfile" </dev/null \
      || die "sshd did not start" "$logfile"
  fi
  wait_until "sshd on 127.0.0.1:$SSH_PORT" "$logfile" tcp_port_open "$SSH_PORT"
  output=$(ssh_as_user id -un 2>&1) || die "sshd: ssh as $TB_USER failed: $output" "$logfile"
  [[ "$output" == "$TB_USER" ]] || die "sshd: ssh as $TB_USER printed '$output'" "$logfile"
}

# A small MPI program for smoke checks; testbed.env names it as TESTBED_MPI_HELLO.
build_mpi_hello() {
  [[ -x "$TB/bin/mpi_hello" ]] && return 0
  cat > "$TB/bin/mpi_hello.c" <<'END_OF_SOURCE'
#include <mpi.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    int rank, size, rank_sum = 0;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Allreduce(&rank, &rank_sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    printf("rank %d of %d sum %d\n", rank, size, rank_sum);
    MPI_Finalize();
    return 0;
}
END_OF_SOURCE
  mpicc -O2 -o "$TB/bin/mpi_hello" "$TB/bin/mpi_hello.c" || die "mpicc could not build mpi_hello"
  chmod 755 "$TB/bin/mpi_hello"
}

write_env_file() {
  cat > "$TB/testbed.env.new" <<END_OF_ENV
TESTBED_DIR=$TB
TESTBED_SSH_HOST=127.0.0.1
TESTBED_SSH_PORT=$SSH_PORT
TESTBED_SSH_USER=$TB_USER
TESTBED_SSH_KEY=$TB/ssh/client_key
TESTBED_SSH_KNOWN_HOSTS=$TB/ssh/known_hosts
TESTBED_REMOTE_HOME=$USER_HOME
TESTBED_SLURM_CONF=$TB/etc/slurm.conf
TESTBED_SLURM_NODE=$NODE
TESTBED_SLURM_CPUS=$NODE_CPUS
TESTBED_SLURM_PARTITIONS=debug,long
TESTBED_SLURMDBD=$WITH_SLURMDBD
TESTBED_MPI_HELLO=$TB/bin/mpi_hello
TESTBED_LOOPBACK_LIBRARY=$SHIM
END_OF_ENV
  chmod 644 "$TB/testbed.env.new"
  mv -f "$TB/testbed.env.new" "$TB/testbed.env"
}

start_accounting() {
  if (( WITH_SLURMDBD )); then
    start_mariadb
    start_slurmdbd
  else
    # Accounting daemons left from an earlier start would otherwise keep running unused.
    stop_pidfile slurmdbd "$TB/run/slurmdbd.pid" /usr/sbin/slurmdbd
    stop_pidfile mariadbd "$TB/run/mysql/mysqld.pid" /usr/sbin/mariadbd
  fi
}

write_configs() {
  build_shim
  write_task_prolog
  write_slurm_conf
  if (( WITH_SLURMDBD )); then
    write_mariadb_conf
    write_slurmdbd_conf
  fi
  write_sshd_config
}

main() {
  parse_args "$@"
  require_root "it installs packages, creates a user and starts sshd and the Slurm daemons"
  command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian 12 only"
  if (( CLEAN )); then
    log "--clean: stopping the testbed and wiping its state"
    bash "$SCRIPT_DIR/testbed-stop.sh" --purge || die "testbed-stop.sh --purge failed"
  fi
  install_packages
  prepare_layout
  prepare_user
  create_keys
  write_configs
  export SLURM_CONF=$TB/etc/slurm.conf
  start_munged
  start_accounting
  start_slurmctld
  start_slurmd
  if (( WITH_SLURMDBD )); then
    register_accounts
  fi
  start_sshd
  build_mpi_hello
  write_env_file
  log "ready: $(sinfo --version), node $NODE $(sinfo -h -n "$NODE" -o %T)," \
    "partitions $(sinfo -h -o %P | tr '\n' ' ')slurmdbd=$WITH_SLURMDBD; details in $TB/testbed.env"
}

main "$@"
