# Shared by the benchmark scripts (sourced, not run): the processes a script started, stopped by
# PID only; logging; root for apt; free loopback ports.
# shellcheck shell=bash

# PIDs of the processes the script started and has not reaped yet, oldest first.
PIDS=()

# Forgets a PID once its process has been reaped, so that clean-up never signals a reused PID.
forget_pid() {
    local pid keep=()
    for pid in "${PIDS[@]}"; do
        [[ $pid == "$1" ]] || keep+=("$pid")
    done
    PIDS=(${keep[@]+"${keep[@]}"})
}

# Stops one process we started: SIGTERM, up to 5 s for a clean exit, then SIGKILL.
stop_pid() {
    local pid=$1
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
}

# Stops every process still in PIDS, newest first (a proxy before the servers behind it).
stop_all() {
    local i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[$i]}"
    done
}

log() { printf '\n== %s\n' "$*" >&2; }

as_root() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi; }

# A loopback TCP port free at the moment of asking.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
