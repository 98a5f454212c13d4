# shellcheck shell=bash
# ops/lib/slurm.sh — a private single-machine Slurm for the Slurm runner's tests. Source it; do not run it.
#
#   . ops/lib/slurm.sh
#   slurm_start /tmp/comity-x/slurm   # munged + slurmctld + slurmd, all inside DIR; exports SLURM_CONF
#   slurm_stop  /tmp/comity-x/slurm   # cancel its jobs, stop the daemons, delete DIR
#
# Everything lives inside DIR and nothing touches a system Slurm or munge:
#   DIR/munge/      munge.key (fresh, mode 400), munged's socket, pid, log and seed file
#   DIR/slurm.conf  the cluster's configuration (AuthInfo points Slurm at DIR/munge/munge.socket)
#   DIR/state/      StateSaveLocation;  DIR/spool/  SlurmdSpoolDir;  DIR/log/  both daemons' logs
#   DIR/*.pid       the daemons' pid files
#
# The cluster: ClusterName comitytest, SlurmctldHost = this machine's short host name, free ports on
# 127.0.0.1, one node named after the host with COMITY_SLURM_CPUS CPUs (default: at least 8, overcommitted
# on small machines so parallel tests are not queued behind each other) and this machine's memory, and one
# partition `comity` (Default=YES). No GRES are defined: a GPU job (sbatch --gres=gpu:N) needs a partition
# whose nodes define GRES (GresTypes=gpu, Gres=gpu:N and a gres.conf), which this test cluster has not.
# Settings avoid cgroups and accounting (see /work/shared/notes/slurm-on-one-machine.md): linuxproc process
# tracking, no task plugin, no accounting storage, cons_tres with CR_Core, the builtin scheduler with
# batch_sched_delay=0 (a job starts well under a second after sbatch), MinJobAge=300 (scontrol show job
# remembers a finished job for 5 minutes; there is no sacct).
#
# As root, munged runs as the `munge` user (which owns DIR/munge) and the Slurm daemons as root; otherwise
# all run as the caller. The functions return non-zero on failure and say why on stderr (the last lines of
# the logs included); they are safe under `set -euo pipefail` and do not change the caller's shell options.

_slurm_log() { printf '[slurm] %s\n' "$*" >&2; }

# Prints the last lines of a log file to stderr (if it exists and is readable).
_slurm_tail() {
    local file="$1" n="${2:-20}"
    if [[ -r "$file" ]]; then
        printf -- '----- last %s lines of %s -----\n' "$n" "$file" >&2
        tail -n "$n" "$file" >&2 || true
        printf -- '-----\n' >&2
    fi
}

# Prints a free TCP port on 127.0.0.1 (python3 if present; else probe random ports).
_slurm_free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()' && return 0
    fi
    local i port
    for ((i = 0; i < 50; i++)); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    return 1
}

# Finds a program on PATH or in the sbin folders a non-login PATH may lack; prints its path.
_slurm_find() {
    local p
    for p in "$(command -v "$1" 2>/dev/null || true)" "/usr/sbin/$1" "/sbin/$1" "/usr/local/sbin/$1"; do
        if [[ -n "$p" && -x "$p" ]]; then
            printf '%s\n' "$p"
            return 0
        fi
    done
    return 1
}

# Sends SIGTERM to the process in a pid file, waits up to 10 s, then SIGKILL.
_slurm_kill_pidfile() {
    local file="$1" pid i
    [[ -r "$file" ]] || return 0
    pid="$(cat "$file" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# slurm_start DIR — starts munged, slurmctld and slurmd with everything inside DIR (see top) and waits
# (up to 30 s) until the node is idle. Exports SLURM_CONF=DIR/slurm.conf.
slurm_start() {
    local dir="${1:?usage: slurm_start DIR}"
    local slurmctld slurmd munged runuser="" host cpus memory ctld_port slurmd_port user i state

    slurmctld="$(_slurm_find slurmctld)" || { _slurm_log "slurmctld not found (package slurm-wlm)"; return 1; }
    slurmd="$(_slurm_find slurmd)" || { _slurm_log "slurmd not found (package slurm-wlm)"; return 1; }
    munged="$(_slurm_find munged)" || { _slurm_log "munged not found (package munge)"; return 1; }
    command -v sinfo >/dev/null 2>&1 || { _slurm_log "sinfo not found (package slurm-client)"; return 1; }
    mkdir -p "$dir" || return 1
    dir="$(cd "$dir" && pwd -P)" || return 1
    if [[ "$dir" =~ [[:space:]] ]]; then
        _slurm_log "refusing a folder with whitespace in its path: '$dir'"
        return 1
    fi
    # munged's socket path must fit in sun_path (107 bytes on Linux).
    if ((${#dir} + 19 > 107)); then
        _slurm_log "folder path too long for munged's unix socket (${#dir} chars): $dir"
        return 1
    fi
    if [[ -e "$dir/slurm.conf" ]]; then
        _slurm_log "$dir already holds a cluster; stop it first (slurm_stop $dir)"
        return 1
    fi
    chmod 755 "$dir"
    mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log" || return 1
    # munged insists that everyone may traverse its socket's folder.
    chmod 755 "$dir/munge"

    # 1. munge: a fresh key and a private daemon.
    if command -v mungekey >/dev/null 2>&1 || [[ -x /usr/sbin/mungekey ]]; then
        "$(_slurm_find mungekey)" --create --keyfile="$dir/munge/munge.key" >/dev/null 2>&1 || return 1
    else
        dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none || return 1
    fi
    chmod 400 "$dir/munge/munge.key"
    if [[ "$(id -u)" -eq 0 ]] && id -u munge >/dev/null 2>&1; then
        runuser="$(_slurm_find runuser)" || { _slurm_log "runuser not found (package util-linux)"; return 1; }
        chown -R munge: "$dir/munge" || return 1
    fi
    if ! ${runuser:+"$runuser" -u munge --} "$munged" --socket="$dir/munge/munge.socket" \
        --key-file="$dir/munge/munge.key" --pid-file="$dir/munge/munged.pid" \
        --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed" 2>"$dir/munge/start.err"; then
        _slurm_log "munged failed to start"
        _slurm_tail "$dir/munge/start.err" 5
        _slurm_tail "$dir/munge/munged.log" 10
        return 1
    fi
    for ((i = 0; i < 100; i++)); do
        [[ -S "$dir/munge/munge.socket" ]] && break
        sleep 0.05
    done
    if [[ ! -S "$dir/munge/munge.socket" ]]; then
        _slurm_log "munged did not create its socket $dir/munge/munge.socket within 5 s"
        _slurm_tail "$dir/munge/munged.log" 10
        slurm_stop "$dir" || true
        return 1
    fi

    # 2. The cluster's configuration.
    host="$(hostname -s)"
    cpus="${COMITY_SLURM_CPUS:-$(($(nproc) > 8 ? $(nproc) : 8))}"
    memory="$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)"
    ctld_port="$(_slurm_free_port)" || { _slurm_log "no free TCP port"; return 1; }
    slurmd_port="$(_slurm_free_port)" || { _slurm_log "no free TCP port"; return 1; }
    [[ "$slurmd_port" != "$ctld_port" ]] || slurmd_port="$(_slurm_free_port)"
    user="$(id -un)"
    : >"$dir/plugstack.conf"
    cat >"$dir/slurm.conf" <<EOF
# A private test cluster made by ops/lib/slurm.sh; delete with slurm_stop $dir.
ClusterName=comitytest
SlurmctldHost=$host
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
PlugStackConfig=$dir/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
SchedulerParameters=batch_sched_delay=0
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=300
KillWait=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=comity Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF="$dir/slurm.conf"

    # 3. The daemons (each forks into the background once it is set up).
    if ! "$slurmctld" -f "$SLURM_CONF" 2>"$dir/log/slurmctld.start.err"; then
        _slurm_log "slurmctld failed to start"
        _slurm_tail "$dir/log/slurmctld.start.err" 5
        _slurm_tail "$dir/log/slurmctld.log"
        slurm_stop "$dir" || true
        return 1
    fi
    if ! "$slurmd" -f "$SLURM_CONF" 2>"$dir/log/slurmd.start.err"; then
        _slurm_log "slurmd failed to start"
        _slurm_tail "$dir/log/slurmd.start.err" 5
        _slurm_tail "$dir/log/slurmd.log"
        slurm_stop "$dir" || true
        return 1
    fi
    state=""
    for ((i = 0; i < 300; i++)); do
        state="$(sinfo -h -p comity -o %t 2>/dev/null || true)"
        [[ "$state" == idle ]] && break
        sleep 0.1
    done
    if [[ "$state" != idle ]]; then
        _slurm_log "node not idle within 30 s (sinfo says '${state:-nothing}')"
        _slurm_tail "$dir/log/slurmctld.log"
        _slurm_tail "$dir/log/slurmd.log"
        slurm_stop "$dir" || true
        return 1
    fi
    _slurm_log "private Slurm $(sinfo -V 2>/dev/null | awk '{print $2}') up: SLURM_CONF=$SLURM_CONF (node $host, $cpus CPUs, ${memory} MiB, partition comity)"
    return 0
}

# slurm_stop DIR — cancels the cluster's jobs, stops slurmd, slurmctld and munged, and deletes DIR.
# Never fails because the cluster was not running or DIR does not exist.
slurm_stop() {
    local dir="${1:?usage: slurm_stop DIR}"
    local i
    [[ -e "$dir" ]] || return 0
    if [[ -f "$dir/slurmctld.pid" ]]; then
        # Jobs first, so no slurmstepd outlives the cluster.
        SLURM_CONF="$dir/slurm.conf" scancel --full --signal=KILL --partition=comity >/dev/null 2>&1 || true
        SLURM_CONF="$dir/slurm.conf" scancel --partition=comity >/dev/null 2>&1 || true
        for ((i = 0; i < 50; i++)); do
            [[ -z "$(SLURM_CONF="$dir/slurm.conf" squeue -h -p comity -o %i 2>/dev/null)" ]] && break
            sleep 0.1
        done
    fi
    _slurm_kill_pidfile "$dir/slurmd.pid"
    _slurm_kill_pidfile "$dir/slurmctld.pid"
    _slurm_kill_pidfile "$dir/munge/munged.pid"
    rm -rf -- "$dir"
}
