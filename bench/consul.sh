#!/usr/bin/env bash
# Consul-face read benchmark: what a read of one service's instances costs the agent through
# the native face and through the Consul face, for an older binary and a newer one, in one run.
#
# For each binary, alternating (old, new, old, new, ...) over ROUNDS rounds, it starts a dev agent
# on a free loopback port, registers 10 passing instances of one service (then 100: SIZES),
# and runs `wrk -t1 -c64 -d10s` against each of
#   native           GET /api/v1/services/bench/instances
#   health?passing   GET /v1/health/service/bench?passing
#   health blocking  GET /v1/health/service/bench?passing&index=1&wait=60s  (a blocking query
#                    whose index has moved on: answered at once, through the blocking path)
#   catalog          GET /v1/catalog/service/bench
# and takes the agent's CPU time per request from /proc/<pid>/stat (user + system ticks over the
# run, divided by the requests wrk completed): less sensitive than req/s to other load on a shared
# machine. Prints, per size and read, the medians over the rounds of req/s and µs of CPU per
# request for each binary, each Consul read's CPU as a multiple of the native read's (same
# binary), and new/old.
#
# Usage: bench/consul.sh
# Environment overrides (defaults in brackets):
#   OLD_BIN [/work/baseline/signpost-faa737f]   the binary to compare against
#   NEW_BIN [target/release/signpost]           the binary under test (not built here)
#   ROUNDS [3]          old/new pairs per size
#   SIZES ["10 100"]    instance counts, measured in this order (instances are added)
#   DURATION [10s]      each measured wrk run
#   WARMUP [2s]         unmeasured wrk run before each measured one
#   CONNECTIONS [64]    wrk -c
#   PIN [0]             1: the agent on CPU 0, wrk on CPU 1 (taskset)
#   KEEP_TMP [0]        1: keep the temporary directory (agent logs, raw wrk output)
# Every process this script starts is stopped by PID on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

OLD_BIN=${OLD_BIN:-/work/baseline/signpost-faa737f}
NEW_BIN=${NEW_BIN:-$ROOT/target/release/signpost}
ROUNDS=${ROUNDS:-3}
SIZES=${SIZES:-10 100}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNECTIONS=${CONNECTIONS:-64}
PIN=${PIN:-0}
KEEP_TMP=${KEEP_TMP:-0}

for bin in "$OLD_BIN" "$NEW_BIN"; do
    [[ -x $bin ]] || { echo "no binary at $bin" >&2; exit 1; }
done
command -v wrk >/dev/null 2>&1 || {
    log "installing wrk (Debian package)"
    as_root apt-get install -y -qq wrk >/dev/null
}
if [[ $PIN == 1 ]]; then
    SERVER=(taskset -c 0)
    LOADGEN=(taskset -c 1)
else
    SERVER=()
    LOADGEN=()
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/signpost-consul-bench.XXXXXX")
cleanup() {
    stop_all
    if [[ $KEEP_TMP == 1 ]]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

READS=(
    "native|/api/v1/services/bench/instances"
    "health?passing|/v1/health/service/bench?passing"
    "health blocking|/v1/health/service/bench?passing&index=1&wait=60s"
    "catalog|/v1/catalog/service/bench"
)
RESULTS="$TMP/results.tsv"
: >"$RESULTS"

# Starts an agent of binary $1; sets AGENT_PID and AGENT_URL.
start_agent() {
    local port
    port=$(free_port)
    RUST_LOG=warn "${SERVER[@]}" "$1" agent --dev --no-dns --http-addr "127.0.0.1:$port" \
        >>"$TMP/agent.log" 2>&1 &
    AGENT_PID=$!
    PIDS+=("$AGENT_PID")
    AGENT_URL="http://127.0.0.1:$port"
    for _ in $(seq 100); do
        curl -fs -o /dev/null "$AGENT_URL/api/v1/agent/self" && return 0
        sleep 0.1
    done
    echo "the agent ($1) did not come up; log in $TMP/agent.log" >&2
    KEEP_TMP=1
    exit 1
}

# Registers instances $2..$3 (passing: no check) of service `bench` on the agent at $1.
register() {
    local i
    for ((i = $2; i <= $3; i++)); do
        curl -fs -o /dev/null -XPOST "$1/api/v1/services/bench/instances" \
            -d "{\"id\": \"bench-$i\", \"address\": \"10.0.$((i / 250)).$((i % 250 + 1))\", \"port\": 8080, \"tags\": [\"v1\"], \"metadata\": {\"zone\": \"a\"}}"
    done
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# measure LABEL SIZE: every read against the running agent, one line each in RESULTS.
measure() {
    local label=$1 size=$2 read name path out before after
    for read in "${READS[@]}"; do
        name=${read%%|*}
        path=${read#*|}
        "${LOADGEN[@]}" wrk -t1 -c"$CONNECTIONS" -d"$WARMUP" "$AGENT_URL$path" >/dev/null
        out="$TMP/wrk-$label-$size-${name//[^a-z]/_}-$ROUND.txt"
        before=$(cpu_ticks "$AGENT_PID")
        "${LOADGEN[@]}" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "$AGENT_URL$path" >"$out"
        after=$(cpu_ticks "$AGENT_PID")
        python3 - "$label" "$size" "$name" "$out" "$((after - before))" "$(getconf CLK_TCK)" \
            >>"$RESULTS" <<'EOF'
import re, sys
label, size, name, path, ticks, hz = sys.argv[1:]
text = open(path).read()
reqs = int(re.search(r"(\d+) requests in", text).group(1))
rps = float(re.search(r"Requests/sec:\s*([\d.]+)", text).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
if bad:
    sys.exit(f"{label} {name}: {bad.group(1)} non-2xx answers")
print(f"{label}\t{size}\t{name}\t{rps}\t{int(ticks) / int(hz) / max(reqs, 1) * 1e6:.2f}")
EOF
        tail -1 "$RESULTS" >&2
    done
}

echo "load before: $(uptime)"
for ROUND in $(seq "$ROUNDS"); do
    for pair in "old|$OLD_BIN" "new|$NEW_BIN"; do
        label=${pair%%|*}
        log "round $ROUND: $label (${pair#*|})"
        start_agent "${pair#*|}"
        have=0
        for size in $SIZES; do
            register "$AGENT_URL" $((have + 1)) "$size"
            have=$size
            measure "$label" "$size"
        done
        stop_pid "$AGENT_PID"
    done
done
echo "load after:  $(uptime)"

echo
echo "wrk -t1 -c$CONNECTIONS -d$DURATION; ROUNDS=$ROUNDS PIN=$PIN; $(nproc) CPUs; medians over rounds"
echo "old: $OLD_BIN"
echo "new: $NEW_BIN"
python3 - "$RESULTS" <<'EOF'
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    label, size, name, rps, us = line.rstrip("\n").split("\t")
    rows[(label, int(size), name)].append((float(rps), float(us)))
med = {k: (statistics.median(r for r, _ in v), statistics.median(u for _, u in v)) for k, v in rows.items()}
names = []
for (_, _, name) in rows:
    if name not in names:
        names.append(name)
sizes = sorted({s for (_, s, _) in rows})
print(f"| instances | read | old req/s | new req/s | old µs CPU/req | new µs CPU/req | old ×native | new ×native | new/old CPU |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for size in sizes:
    for name in names:
        o, n = med.get(("old", size, name)), med.get(("new", size, name))
        if not o or not n:
            continue
        on, nn = med[("old", size, "native")], med[("new", size, "native")]
        print(f"| {size} | {name} | {o[0]:,.0f} | {n[0]:,.0f} | {o[1]:.1f} | {n[1]:.1f} | "
              f"{o[1] / on[1]:.2f} | {n[1] / nn[1]:.2f} | {n[1] / o[1]:.2f} |")
EOF
