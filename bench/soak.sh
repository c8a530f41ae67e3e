#!/usr/bin/env bash
# Soak run (issue 14): a durable agent holds INSTANCES heartbeating instances for DURATION while
# CHURNERS clients churn blocking queries, watches and registrations of random names. Passes when
# there is no false expiry, no error other than a limit's own 429/413, and the agent's RSS stays
# within ±5% of its median after the warm-up. Every process it starts is killed by PID on exit.
#
# Usage: bench/soak.sh
# Environment overrides (defaults in brackets):
#   INSTANCES [100000]  heartbeating instances      SERVICES [100]   services they are spread over
#   CHURNERS [1000]     churning client tasks       THINK [100ms]    idle time between churn ops
#   DURATION [10m]      length of the soak          WARMUP [1m]      RSS samples before it are not judged
#   TTL [30s]           TTL of the soak instances (heartbeats every third of it)
#   SKIP_BUILD [0]      1 = use the release binaries already built
#   KEEP_TMP [0]        1 = keep the agent's log and data directory
set -euo pipefail

INSTANCES=${INSTANCES:-100000}
SERVICES=${SERVICES:-100}
CHURNERS=${CHURNERS:-1000}
THINK=${THINK:-100ms}
DURATION=${DURATION:-10m}
WARMUP=${WARMUP:-1m}
TTL=${TTL:-30s}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/signpost-soak.XXXXXX")
cleanup() {
    stop_all
    if [[ $KEEP_TMP == 1 ]]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

# 1,000 churners and the agent's side of their connections need more than the usual 1,024 fds.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

if [[ $SKIP_BUILD != 1 ]]; then
    log "building (release)"
    cargo build --release -p signpost -p signpost-bench
fi
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

PORT=$(free_port)
log "starting a durable agent on 127.0.0.1:$PORT"
# Every churner and heartbeater is one client (127.0.0.1): the per-client caps, meant to stop one
# client from crowding out others, would refuse the soak's own load, so they are off; the
# state limits stay as shipped.
printf "[limits]\nhttp_max_conns_per_client = 0\nmax_blocking_per_client = 0\n" >"$TMP/signpost.toml"
"$TARGET_DIR/release/signpost" agent --config "$TMP/signpost.toml" --data-dir "$TMP/data" --http-addr "127.0.0.1:$PORT" \
    >"$TMP/agent.log" 2>&1 &
AGENT_PID=$!
PIDS+=("$AGENT_PID")
deadline=$((SECONDS + 30))
until curl -sf --max-time 1 "http://127.0.0.1:$PORT/v1/status/leader" | grep -q '[0-9]'; do
    kill -0 "$AGENT_PID" 2>/dev/null || { cat "$TMP/agent.log" >&2; exit 1; }
    ((SECONDS < deadline)) || { echo "no leader in 30 s" >&2; cat "$TMP/agent.log" >&2; exit 1; }
    sleep 0.1
done

log "soak: $INSTANCES instances, $CHURNERS churners, $DURATION"
"$TARGET_DIR/release/signpost-bench" --addr "http://127.0.0.1:$PORT" soak \
    --instances "$INSTANCES" --services "$SERVICES" --churners "$CHURNERS" --think "$THINK" \
    --duration "$DURATION" --warmup "$WARMUP" --ttl "$TTL" --agent-pid "$AGENT_PID"
