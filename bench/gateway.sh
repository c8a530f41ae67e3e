#!/usr/bin/env bash
# Gateway benchmark: the same route measured with wrk through three paths, in one run:
#   1. a backend directly,
#   2. nginx as a reverse proxy (upstream with keepalive, round robin over two backends),
#   3. the Signpost gateway (round robin over the same two backends, found in a dev agent).
# Both proxies do the same per-request work: pooled keep-alive upstream connections, Host kept,
# X-Forwarded-For/-Proto/-Host and X-Request-Id set, no access log (bench/gateway/*.in).
# Prints req/s, p50 and p99 of each, the CPU time the server under test spent per request (user +
# system, from /proc: less sensitive than req/s to other load on the machine) and the ratios to
# nginx. Everything runs on loopback; every
# process this script starts is stopped by PID on exit and its temporary directory removed.
#
# Usage: bench/gateway.sh
# Environment overrides (defaults in brackets):
#   DURATION [10s]     length of each measured wrk run
#   CONNECTIONS [64]   wrk connections (-c)
#   WRK_THREADS [2]    wrk threads (-t)
#   PIN [1]            1: wrk on CPU 1, the backends, agent and proxies on CPU 0 (taskset), so
#                      the load generator and the proxy under test do not fight over one core.
#                      0: no pinning.
#   WORKERS [1]        nginx worker_processes and gateway runtime threads (the same for both;
#                      with PIN=1 they share CPU 0, so 1 is the fair setting)
#   ROUNDS [1]         measure nginx and the gateway this many times, alternating; the table
#                      shows the median of each figure over the rounds
#   WARMUP [2s]        unmeasured wrk run before each measured one
#   SKIP_BUILD [0]     1 = use the binaries already in the target dir
#   KEEP_TMP [0]       1 = keep the temporary directory (configs, logs, raw wrk output)
#   TRACING [0]        1 = also measure a second gateway with tracing on but nothing sampled
#                      ([telemetry] otlp_endpoint set, sampling_ratio = 0: every request still
#                      gets a span context and a traceparent upstream); the table then has a
#                      "gateway, traced" row and its req/s ratio to the plain gateway
#   BASELINE_BIN []    path to an older `signpost` binary: its gateway runs beside the new one
#                      (same config, other ports) and is measured in every round, alternating
#                      (nginx, old, new), and the table ends with the new/old ratios (req/s, p99,
#                      CPU per request; medians of the per-round ratios). With TRACING=1 the old
#                      binary's traced gateway is measured too.
#   PERF_OUT []        a path: `perf record -g` samples the new gateway during its first measured
#                      run and writes perf.data there (read it with `perf report -i PATH`)
set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
WRK_THREADS=${WRK_THREADS:-2}
PIN=${PIN:-1}
WORKERS=${WORKERS:-1}
ROUNDS=${ROUNDS:-1}
WARMUP=${WARMUP:-2s}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}
TRACING=${TRACING:-0}
BASELINE_BIN=${BASELINE_BIN:-}
PERF_OUT=${PERF_OUT:-}
if [[ -n $BASELINE_BIN && ! -x $BASELINE_BIN ]]; then
    echo "BASELINE_BIN=$BASELINE_BIN is not an executable" >&2
    exit 1
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/signpost-gateway-bench.XXXXXX")
chmod 755 "$TMP" # nginx workers run as an unprivileged user

cleanup() {
    # Newest first: the proxies stop before the agent and the backends they depend on.
    stop_all
    if [[ $KEEP_TMP == 1 ]]; then
        echo "kept $TMP (configs, logs, raw wrk output)" >&2
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT

# ---- tools ------------------------------------------------------------------------------------
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]} (Debian packages)"
    as_root apt-get update -qq
    # Debian's nginx package may try to start the system service; the script uses its own.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

CPUS=$(nproc)
if [[ $PIN == 1 && $CPUS -lt 2 ]]; then
    echo "PIN=1 needs 2 CPUs, this machine has $CPUS; running unpinned" >&2
    PIN=0
fi
if [[ $PIN == 1 ]]; then
    SERVERS=(taskset -c 0)
    LOADGEN=(taskset -c 1)
else
    SERVERS=()
    LOADGEN=()
fi

if [[ $SKIP_BUILD != 1 ]]; then
    log "building (release)"
    cargo build --release -q -p signpost -p signpost-gateway --bins
fi
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"

wait_http() {
    local url=$1 what=$2
    for _ in $(seq 100); do
        if curl -fs -o /dev/null "$url"; then
            return 0
        fi
        sleep 0.1
    done
    echo "$what did not come up ($url); logs in $TMP" >&2
    KEEP_TMP=1
    exit 1
}

# ---- backends, agent, proxies -----------------------------------------------------------------
BACKEND_A=$(free_port)
BACKEND_B=$(free_port)
AGENT_PORT=$(free_port)
NGINX_PORT=$(free_port)
GATEWAY_PORT=$(free_port)
ADMIN_PORT=$(free_port)
TRACED_PORT=$(free_port)
TRACED_ADMIN_PORT=$(free_port)
OLD_PORT=$(free_port)
OLD_ADMIN_PORT=$(free_port)
OLD_TRACED_PORT=$(free_port)
OLD_TRACED_ADMIN_PORT=$(free_port)
# Nothing listens there: with sampling_ratio 0 no span is ever exported.
OTLP_PORT=$(free_port)

log "starting two backends, a dev agent, nginx and the gateway"
"${SERVERS[@]}" "$BIN/gateway-bench-backend" "127.0.0.1:$BACKEND_A" a 1 >"$TMP/backend-a.log" 2>&1 &
PIDS+=($!)
"${SERVERS[@]}" "$BIN/gateway-bench-backend" "127.0.0.1:$BACKEND_B" b 1 >"$TMP/backend-b.log" 2>&1 &
PIDS+=($!)
RUST_LOG=warn "${SERVERS[@]}" "$BIN/signpost" agent --dev --no-dns \
    --http-addr "127.0.0.1:$AGENT_PORT" >"$TMP/agent.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$BACKEND_A/" "backend a"
wait_http "http://127.0.0.1:$BACKEND_B/" "backend b"
wait_http "http://127.0.0.1:$AGENT_PORT/api/v1/agent/self" "the agent"
for id in a b; do
    port=$BACKEND_A
    [[ $id == b ]] && port=$BACKEND_B
    # No check: the instances are passing from the start and stay so.
    curl -fs -o /dev/null -XPOST "http://127.0.0.1:$AGENT_PORT/api/v1/services/bench/instances" \
        -d "{\"id\": \"bench-$id\", \"address\": \"127.0.0.1\", \"port\": $port}"
done

fill() {
    sed -e "s|@TMP@|$TMP|g" -e "s|@WORKERS@|$WORKERS|g" -e "s|@BACKEND_A@|$BACKEND_A|g" \
        -e "s|@BACKEND_B@|$BACKEND_B|g" -e "s|@NGINX_PORT@|$NGINX_PORT|g" \
        -e "s|@GATEWAY_PORT@|$GATEWAY_PORT|g" -e "s|@ADMIN_PORT@|$ADMIN_PORT|g" \
        -e "s|@AGENT_PORT@|$AGENT_PORT|g" "$1"
}
fill bench/gateway/nginx.conf.in >"$TMP/nginx.conf"
fill bench/gateway/gateway.toml.in >"$TMP/gateway.toml"
if [[ $TRACING == 1 ]]; then
    # The same gateway on other ports, with tracing on and nothing sampled.
    sed -e "s|127.0.0.1:$GATEWAY_PORT|127.0.0.1:$TRACED_PORT|" \
        -e "s|127.0.0.1:$ADMIN_PORT|127.0.0.1:$TRACED_ADMIN_PORT|" "$TMP/gateway.toml" \
        >"$TMP/gateway-traced.toml"
    printf '\n[telemetry]\notlp_endpoint = "http://127.0.0.1:%s"\nsampling_ratio = 0.0\n' \
        "$OTLP_PORT" >>"$TMP/gateway-traced.toml"
fi
if [[ -n $BASELINE_BIN ]]; then
    # The old binary's gateway: the same config on other ports.
    sed -e "s|127.0.0.1:$GATEWAY_PORT|127.0.0.1:$OLD_PORT|" \
        -e "s|127.0.0.1:$ADMIN_PORT|127.0.0.1:$OLD_ADMIN_PORT|" "$TMP/gateway.toml" \
        >"$TMP/gateway-old.toml"
    if [[ $TRACING == 1 ]]; then
        sed -e "s|127.0.0.1:$TRACED_PORT|127.0.0.1:$OLD_TRACED_PORT|" \
            -e "s|127.0.0.1:$TRACED_ADMIN_PORT|127.0.0.1:$OLD_TRACED_ADMIN_PORT|" \
            "$TMP/gateway-traced.toml" >"$TMP/gateway-old-traced.toml"
    fi
fi
mkdir -p "$TMP/nginx-body" "$TMP/nginx-proxy" "$TMP/nginx-fastcgi" "$TMP/nginx-uwsgi" "$TMP/nginx-scgi"

"${SERVERS[@]}" "$NGINX" -p "$TMP" -e "$TMP/nginx-error.log" -c "$TMP/nginx.conf" -g 'daemon off;' \
    >"$TMP/nginx.log" 2>&1 &
PIDS+=($!)
RUST_LOG=warn "${SERVERS[@]}" "$BIN/signpost" gateway --config "$TMP/gateway.toml" \
    >"$TMP/gateway.log" 2>&1 &
PIDS+=($!)
GATEWAY_PID=$!
NGINX_PID=${PIDS[-2]}
if [[ $TRACING == 1 ]]; then
    RUST_LOG=warn "${SERVERS[@]}" "$BIN/signpost" gateway --config "$TMP/gateway-traced.toml" \
        >"$TMP/gateway-traced.log" 2>&1 &
    PIDS+=($!)
    TRACED_PID=$!
    wait_http "http://127.0.0.1:$TRACED_PORT/" "the traced gateway"
fi
PROXY_PORTS=("$NGINX_PORT" "$GATEWAY_PORT")
if [[ -n $BASELINE_BIN ]]; then
    RUST_LOG=warn "${SERVERS[@]}" "$BASELINE_BIN" gateway --config "$TMP/gateway-old.toml" \
        >"$TMP/gateway-old.log" 2>&1 &
    PIDS+=($!)
    OLD_PID=$!
    wait_http "http://127.0.0.1:$OLD_PORT/" "the baseline gateway"
    PROXY_PORTS+=("$OLD_PORT")
    if [[ $TRACING == 1 ]]; then
        RUST_LOG=warn "${SERVERS[@]}" "$BASELINE_BIN" gateway \
            --config "$TMP/gateway-old-traced.toml" >"$TMP/gateway-old-traced.log" 2>&1 &
        PIDS+=($!)
        OLD_TRACED_PID=$!
        wait_http "http://127.0.0.1:$OLD_TRACED_PORT/" "the baseline traced gateway"
    fi
fi
wait_http "http://127.0.0.1:$NGINX_PORT/" "nginx"
wait_http "http://127.0.0.1:$GATEWAY_PORT/" "the gateway"

# Every proxy must reach both backends before anything is measured.
for port in "${PROXY_PORTS[@]}"; do
    seen=$(for _ in 1 2 3 4; do curl -fs "http://127.0.0.1:$port/"; done | sort -u | tr '\n' ' ')
    if [[ $seen != "hello from a hello from b " ]]; then
        echo "proxy on port $port answered: $seen (expected both backends); logs in $TMP" >&2
        KEEP_TMP=1
        exit 1
    fi
done

# ---- measurements -----------------------------------------------------------------------------
# CPU ticks (user + system) used so far by the given processes.
cpu_ticks() {
    local pid total=0
    for pid in "$@"; do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}

# run_wrk LABEL PORT PID...: a warm-up, then the measured run; records the CPU the PIDs used.
run_wrk() {
    local label=$1 port=$2
    shift 2
    "${LOADGEN[@]}" wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$WARMUP" "http://127.0.0.1:$port/" >/dev/null
    log "wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION --latency http://127.0.0.1:$port/  ($label)"
    local before after
    before=$(cpu_ticks "$@")
    local perf_pid=
    if [[ -n $PERF_OUT && $label == signpost-1 ]]; then
        perf record -q -g -F 999 -o "$PERF_OUT" -p "$1" -- sleep "${DURATION%s}" \
            >"$TMP/perf.log" 2>&1 &
        perf_pid=$!
        PIDS+=("$perf_pid")
    fi
    "${LOADGEN[@]}" wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
        "http://127.0.0.1:$port/" >"$TMP/wrk-$label.txt"
    after=$(cpu_ticks "$@")
    if [[ -n $perf_pid ]]; then
        wait "$perf_pid" || echo "perf record failed: $(cat "$TMP/perf.log")" >&2
        forget_pid "$perf_pid"
    fi
    echo "cpu_ticks $((after - before)) $(getconf CLK_TCK)" >>"$TMP/wrk-$label.txt"
    grep -E "Requests/sec|^ +(50|99)%" "$TMP/wrk-$label.txt" >&2
}

echo "load before: $(uptime)"
REPORT=()
NGINX_WORKERS=$(pgrep -P "$NGINX_PID" | tr '\n' ' ')
run_wrk direct "$BACKEND_A" "${PIDS[0]}"
REPORT+=("direct=$TMP/wrk-direct.txt")
for round in $(seq "$ROUNDS"); do
    # shellcheck disable=SC2086 # one PID per word
    run_wrk "nginx-$round" "$NGINX_PORT" "$NGINX_PID" $NGINX_WORKERS
    REPORT+=("nginx#$round=$TMP/wrk-nginx-$round.txt")
    if [[ -n $BASELINE_BIN ]]; then
        run_wrk "old-$round" "$OLD_PORT" "$OLD_PID"
        REPORT+=("old#$round=$TMP/wrk-old-$round.txt")
    fi
    run_wrk "signpost-$round" "$GATEWAY_PORT" "$GATEWAY_PID"
    REPORT+=("signpost#$round=$TMP/wrk-signpost-$round.txt")
    if [[ $TRACING == 1 && -n $BASELINE_BIN ]]; then
        run_wrk "traced_old-$round" "$OLD_TRACED_PORT" "$OLD_TRACED_PID"
        REPORT+=("traced_old#$round=$TMP/wrk-traced_old-$round.txt")
    fi
    if [[ $TRACING == 1 ]]; then
        run_wrk "traced-$round" "$TRACED_PORT" "$TRACED_PID"
        REPORT+=("traced#$round=$TMP/wrk-traced-$round.txt")
    fi
done
echo "load after:  $(uptime)"

echo
echo "wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION --latency; PIN=$PIN WORKERS=$WORKERS ROUNDS=$ROUNDS; $(nproc) CPUs${BASELINE_BIN:+; baseline $BASELINE_BIN}"
python3 bench/gateway/report.py "${REPORT[@]}"
