#!/usr/bin/env bash
# Signpost vs etcd, side by side: installs what the benchmark needs, builds release binaries,
# runs every scenario against Signpost and etcd 3.4 back to back (each on free loopback ports,
# data dirs in a temporary directory), then the gateway benchmark (bench/gateway.sh) if there is
# one, and writes bench/report.md with its chart bench/report.svg (and every sample in
# bench/report.json).
#
# Usage: bench/run.sh [--quick] [signpost-bench compare flags...]
#   --quick (or QUICK=1)  smaller numbers, one run: ~3 minutes; writes bench/quick/report.md
#   default (full)        the issue's numbers, 3 runs: ~35-45 minutes on a 2-core machine
#   --runs N, --scenarios register,discover,consul,heartbeat,watch,memory,restart, --keep,
#   --no-etcd             see `signpost-bench compare --help`
# Environment: SKIP_BUILD=1 uses the binaries already built; SKIP_INSTALL=1 installs nothing.
#   BASELINE_BIN=<older signpost binary>: every Signpost scenario runs on it too, alternating
#   with the new build in each run, and the report prints new/old ratios (with --no-etcd,
#   only those).
#
# Every process started is killed by PID on exit: the harness kills its servers itself, and
# this script kills the harness and whatever PIDs it recorded, should it die first.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

QUICK=${QUICK:-0}
ARGS=()
for arg in "$@"; do
    if [[ $arg == --quick ]]; then QUICK=1; else ARGS+=("$arg"); fi
done

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

# ---- what the benchmark needs ---------------------------------------------------------------
if [[ ${SKIP_INSTALL:-0} != 1 ]]; then
    need=()
    command -v etcd >/dev/null 2>&1 || need+=(etcd-server) # etcd 3.4 (Debian)
    command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler) # etcd-client's build
    command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need+=(nginx) # gateway bench
    command -v wrk >/dev/null 2>&1 || need+=(wrk)                                 # gateway bench
    command -v python3 >/dev/null 2>&1 || need+=(python3)
    if ((${#need[@]})); then
        log "installing ${need[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
    fi
    # Debian starts the packaged etcd (and nginx) as services: the benchmark starts its own.
    for svc in etcd nginx; do
        if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
            as_root systemctl stop "$svc" || true
        fi
    done
fi
ETCD=$(command -v etcd)

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "building (release)"
    cargo build --release -p signpost -p signpost-bench
fi
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
BENCH=$TARGET_DIR/release/signpost-bench
SIGNPOST=$TARGET_DIR/release/signpost
BASELINE=()
if [[ -n ${BASELINE_BIN:-} ]]; then
    if [[ ! -x $BASELINE_BIN ]]; then
        echo "BASELINE_BIN=$BASELINE_BIN is not an executable" >&2
        exit 2
    fi
    BASELINE=(--baseline-bin "$BASELINE_BIN")
fi

# ---- clean-up: by PID only ------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/signpost-run.XXXXXX")
PID_FILE=$TMP/pids
HARNESS=
cleanup() {
    local pid
    if [[ -n $HARNESS ]] && kill -0 "$HARNESS" 2>/dev/null; then
        kill -TERM "$HARNESS" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$HARNESS" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$HARNESS" 2>/dev/null || true
    fi
    if [[ -f $PID_FILE ]]; then
        while read -r pid; do
            # Only a server this run started: the PID must still run signpost or etcd.
            if [[ -n $pid ]] && grep -qaE 'signpost|etcd' "/proc/$pid/cmdline" 2>/dev/null; then
                kill -KILL "$pid" 2>/dev/null || true
            fi
        done <"$PID_FILE"
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ $QUICK == 1 ]]; then
    REPORT=bench/quick/report.md
    MODE=(--quick)
else
    REPORT=bench/report.md
    MODE=()
fi

# The watch-memory row holds 100,000 watches open: a descriptor each in the generator and in the
# agent it starts (fewer are opened when the hard limit is lower).
ulimit -n 210000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
log "uptime before: $(uptime)"
log "running the suite (${MODE[*]:-full}${BASELINE_BIN:+, baseline $BASELINE_BIN}) -> $REPORT"
"$BENCH" compare "${MODE[@]}" \
    --signpost-bin "$SIGNPOST" --etcd-bin "$ETCD" ${BASELINE[@]+"${BASELINE[@]}"} \
    --report "$REPORT" --work-dir "$TMP/work" --pid-file "$PID_FILE" \
    --gateway-script bench/gateway.sh \
    ${ARGS[@]+"${ARGS[@]}"} &
HARNESS=$!
status=0
wait "$HARNESS" || status=$?
HARNESS=
log "uptime after: $(uptime)"
if [[ -f $REPORT ]]; then
    log "report: $REPORT (chart: ${REPORT%.md}.svg)"
fi
exit "$status"
