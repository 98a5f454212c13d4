#!/usr/bin/env bash
# ops/lib/pg.sh — PostgreSQL helpers for Comity's scripts. Source it; do not run it.
#
#   . ops/lib/pg.sh
#   pg_ensure_installed               # install PostgreSQL (root) or say how
#   pg_throwaway_start /tmp/comity-x  # initdb + start a private cluster; exports COMITY_TEST_PG_*
#   pg_throwaway_stop  /tmp/comity-x  # stop it and delete the folder
#
# A throwaway cluster lives entirely inside DIR: DIR/data (the cluster), DIR/pg.log
# (server log), DIR/initdb.log, DIR/pg_ctl.log, and the unix socket DIR/.s.PGSQL.PORT. It trusts every
# local connection, has the superuser `comity`, listens on 127.0.0.1 on a free port,
# and runs with fsync off: for tests only, never for data you want to keep.
#
# PostgreSQL refuses to run as root; when these functions run as root they run initdb,
# pg_ctl and the server as the `postgres` system user (via runuser) and chown DIR to it.
#
# The functions return non-zero on failure and print why on stderr; they are safe
# under `set -euo pipefail` and do not change the caller's shell options.

# Prints the PostgreSQL server bin folder (the one holding initdb and pg_ctl).
# Prefers `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin.
pg_bindir() {
    local dir
    if command -v pg_config >/dev/null 2>&1; then
        dir="$(pg_config --bindir 2>/dev/null || true)"
        if [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
            printf '%s\n' "$dir"
            return 0
        fi
    fi
    dir="$(
        for d in /usr/lib/postgresql/*/bin; do
            [[ -x "$d/initdb" && -x "$d/pg_ctl" ]] && printf '%s\n' "$d"
        done | sort -V | tail -n 1
    )"
    if [[ -n "$dir" ]]; then
        printf '%s\n' "$dir"
        return 0
    fi
    return 1
}

# Where runuser lives (util-linux puts it in /usr/sbin on Debian, which a non-login
# root PATH may lack). Prints the path, or returns 1.
_pg_runuser() {
    local p
    for p in "$(command -v runuser 2>/dev/null || true)" /usr/sbin/runuser /sbin/runuser /usr/bin/runuser; do
        if [[ -n "$p" && -x "$p" ]]; then
            printf '%s\n' "$p"
            return 0
        fi
    done
    return 1
}

_pg_log() { printf '[pg] %s\n' "$*" >&2; }

# Makes sure the PostgreSQL server binaries (and, for root, runuser and the
# `postgres` user) exist. As root it installs what is missing with apt-get;
# otherwise it prints the exact command to run and returns 1.
pg_ensure_installed() {
    local missing=()
    pg_bindir >/dev/null 2>&1 || missing+=(postgresql)
    if [[ "$(id -u)" -eq 0 ]]; then
        _pg_runuser >/dev/null || missing+=(util-linux)
    fi
    if [[ ${#missing[@]} -gt 0 ]]; then
        if [[ "$(id -u)" -eq 0 ]]; then
            _pg_log "installing ${missing[*]} with apt-get"
            if ! { DEBIAN_FRONTEND=noninteractive apt-get update \
                && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"; }; then
                _pg_log "apt-get install ${missing[*]} failed"
                return 1
            fi
        else
            _pg_log "PostgreSQL server binaries not found (looked at pg_config --bindir and /usr/lib/postgresql/*/bin)."
            _pg_log "Install them with:"
            _pg_log "    sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing[*]}"
            return 1
        fi
    fi
    if ! pg_bindir >/dev/null 2>&1; then
        _pg_log "PostgreSQL still not found after installing; check pg_config --bindir"
        return 1
    fi
    if [[ "$(id -u)" -eq 0 ]]; then
        if ! _pg_runuser >/dev/null; then
            _pg_log "runuser not found (package util-linux)"
            return 1
        fi
        if ! id -u postgres >/dev/null 2>&1; then
            _pg_log "running as root but there is no 'postgres' system user (the postgresql package creates it)"
            return 1
        fi
    fi
    return 0
}

# Runs a command as the cluster owner: `postgres` when we are root, else ourselves.
_pg_as_owner() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$(_pg_runuser)" -u postgres -- "$@"
    else
        "$@"
    fi
}

# Prints a free TCP port on 127.0.0.1 (python3 if present; else probe random ports).
_pg_free_port() {
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
        # A successful connect means something listens there already.
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    return 1
}

# Prints the last lines of a log file to stderr (if it exists and is readable).
_pg_tail() {
    local file="$1" n="${2:-40}"
    if [[ -r "$file" ]]; then
        printf -- '----- last %s lines of %s -----\n' "$n" "$file" >&2
        tail -n "$n" "$file" >&2 || true
        printf -- '-----\n' >&2
    fi
}

# pg_throwaway_start DIR — creates and starts a throwaway cluster in DIR (see top).
# Exports COMITY_TEST_PG_URL, COMITY_TEST_PG_PORT, COMITY_TEST_PG_DIR.
pg_throwaway_start() {
    local dir="${1:?usage: pg_throwaway_start DIR}"
    local bindir port attempt d rest comp

    bindir="$(pg_bindir)" || {
        _pg_log "PostgreSQL not found; run pg_ensure_installed first"
        return 1
    }
    mkdir -p "$dir" || return 1
    dir="$(cd "$dir" && pwd -P)" || return 1
    if [[ "$dir" =~ [[:space:]] ]]; then
        _pg_log "refusing a cluster folder with whitespace in its path: '$dir'"
        return 1
    fi
    # The socket path DIR/.s.PGSQL.NNNNN must fit in sun_path (107 bytes on Linux).
    if ((${#dir} + 18 > 107)); then
        _pg_log "cluster folder path too long for a unix socket (${#dir} chars): $dir; use a short one such as /tmp/comity-test.XXXX"
        return 1
    fi
    if [[ -e "$dir/data/PG_VERSION" ]]; then
        _pg_log "$dir/data already holds a cluster; stop and remove it first (pg_throwaway_stop $dir)"
        return 1
    fi

    if [[ "$(id -u)" -eq 0 ]]; then
        chown postgres: "$dir" || return 1
        # postgres must be able to traverse every parent of DIR.
        d=""
        rest="${dir#/}"
        while [[ -n "$rest" ]]; do
            comp="${rest%%/*}"
            d="$d/$comp"
            if [[ "$rest" == */* ]]; then rest="${rest#*/}"; else rest=""; fi
            if ! "$(_pg_runuser)" -u postgres -- test -x "$d"; then
                _pg_log "user postgres cannot enter $d (a parent of the cluster folder); pick a folder under /tmp or run: chmod o+x '$d'"
                return 1
            fi
        done
    fi

    if ! _pg_as_owner "$bindir/initdb" -D "$dir/data" -U comity --auth=trust \
        -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1; then
        _pg_log "initdb failed in $dir/data"
        _pg_tail "$dir/initdb.log"
        return 1
    fi

    # A port found free may be taken before the server binds it: try a few.
    for attempt in 1 2 3; do
        port="$(_pg_free_port)" || {
            _pg_log "could not find a free TCP port"
            return 1
        }
        if _pg_as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/pg.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 -c shared_buffers=128MB" \
            start >"$dir/pg_ctl.log" 2>&1; then
            export COMITY_TEST_PG_PORT="$port"
            export COMITY_TEST_PG_DIR="$dir"
            export COMITY_TEST_PG_URL="postgres://comity@127.0.0.1:$port/postgres"
            _pg_log "throwaway PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') up: $COMITY_TEST_PG_URL (socket dir $dir, log $dir/pg.log)"
            return 0
        fi
        _pg_log "pg_ctl start failed on port $port (attempt $attempt)"
        _pg_tail "$dir/pg_ctl.log" 10
        _pg_tail "$dir/pg.log" 20
        # Do not retry if it is still (half) running.
        _pg_as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    done
    _pg_log "could not start PostgreSQL in $dir/data"
    _pg_tail "$dir/pg.log"
    return 1
}

# pg_throwaway_stop DIR — stops the cluster in DIR (if it runs) and removes DIR.
# Never fails because the cluster was not running or DIR does not exist.
pg_throwaway_stop() {
    local dir="${1:?usage: pg_throwaway_stop DIR}"
    local bindir
    [[ -e "$dir" ]] || return 0
    if [[ -f "$dir/data/postmaster.pid" ]] && bindir="$(pg_bindir)"; then
        _pg_as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 \
            || _pg_as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 \
            || _pg_log "could not stop PostgreSQL in $dir/data (already gone?)"
    fi
    rm -rf -- "$dir"
}
