# shellcheck shell=bash
# ops/lib/runners.sh — what the agent's runners need on a test or pool machine.
#
#   runners_ensure_installed   # bubblewrap (sandbox runner), slurm-wlm + munge (Slurm runner's tests)
#
# As root, installs what is missing with apt-get; otherwise prints the command and
# returns 0: the tests that need a missing tool skip themselves with a message naming it.

_runners_log() { printf '[runners] %s\n' "$*" >&2; }

runners_ensure_installed() {
    local missing=()
    command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
    command -v slurmctld >/dev/null 2>&1 || missing+=(slurm-wlm)
    command -v munged >/dev/null 2>&1 || missing+=(munge)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        _runners_log "installing ${missing[*]} with apt-get"
        if ! { DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2 \
            || { DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 \
                && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2; }; }; then
            _runners_log "apt-get install ${missing[*]} failed; the tests needing them will skip"
        fi
    else
        _runners_log "missing ${missing[*]}; the tests needing them will skip. Install with:"
        _runners_log "    sudo apt-get install -y ${missing[*]}"
    fi
    return 0
}
