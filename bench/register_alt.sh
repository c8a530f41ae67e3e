#!/usr/bin/env bash
# Registrations (a new instance with a TTL check each, 64 connections) against two signpost
# binaries in turn, alternating, each on a fresh data dir: req/s, p50, p99 and the agent's CPU
# per request (from /proc). bench/PROFILES.md "Write path" was measured with it.
#
#   OLD=/path/to/old/signpost NEW=target/release/signpost ROUNDS=3 DURATION=8s bench/register_alt.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
OLD="${OLD:?set OLD to the older signpost binary}"
NEW="${NEW:-$here/../target/release/signpost}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-8s}"
work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for round in $(seq 1 "$ROUNDS"); do
  for which in old new; do
    bin="$OLD"; [ "$which" = new ] && bin="$NEW"
    rm -rf "$work/data"
    http="$(free_port)"; dns="$(free_port)"
    "$bin" agent --data-dir "$work/data" --http-addr "127.0.0.1:$http" --dns-addr "127.0.0.1:$dns" \
      > "$work/agent.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do curl -sf "127.0.0.1:$http/v1/status/leader" > /dev/null && break; sleep 0.1; done
    t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
    out="$(wrk -t1 -c64 -d"$DURATION" -s "$here/register.lua" --latency "http://127.0.0.1:$http")"
    t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
    kill "$pid"; wait "$pid" 2> /dev/null || true; pid=""
    n=$(awk '/requests in/{print $1}' <<< "$out")
    ticks=$(getconf CLK_TCK)
    printf '%s round %s: %s req/s, p50 %s, p99 %s, %.1f µs CPU per request, non-2xx %s\n' \
      "$which" "$round" "$(awk '/Requests\/sec/{print $2}' <<< "$out")" \
      "$(awk '$1=="50%"{print $2}' <<< "$out")" "$(awk '$1=="99%"{print $2}' <<< "$out")" \
      "$(echo "($t1-$t0)*1000000/$ticks/$n" | bc -l)" \
      "$(awk '/Non-2xx/{print $NF}' <<< "$out" | grep . || echo 0)"
  done
done
