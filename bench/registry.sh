#!/usr/bin/env bash
# Registry benchmark: registration throughput, discovery query rate, and restart time of a
# durable agent holding SEED_COUNT instances. Everything runs on loopback; every process this
# script starts is killed by PID on exit and its temporary directory removed.
#
# Usage: bench/registry.sh
# Environment overrides (defaults in brackets):
#   COUNT [20000]        registrations in the register phase
#   CLIENTS [64]         concurrent client connections
#   SERVICES [1000]      services the registrations are spread over
#   DURATION [10s]       length of each discovery phase
#   REGISTER_TTL [10m]   check TTL of the registered instances ("none" = no check). Nothing
#                        heartbeats them: with the CLI's 30s default they start expiring during
#                        the discovery phases, and the health checker's status writes (up to
#                        half of them, until the mass-eviction guard engages) skew those figures
#   SEED_COUNT [100000]  instances seeded before the kill -9 / restart measurement
#   SEED_TTL [none]      check TTL of the seeded instances ("none" = no check)
#   RESTART_TIMEOUT [120] seconds the restarted agent gets to serve every instance again
#   ACL [1]              1 = also run register and discover-10 against an agent with ACLs on,
#                        with a token of a few rules, to show what authorization costs
#   SKIP_BUILD [0]       1 = use the binaries already in the target dir
#   KEEP_TMP [0]         1 = keep the temporary directory (agent logs, JSON reports)
set -euo pipefail

COUNT=${COUNT:-20000}
CLIENTS=${CLIENTS:-64}
SERVICES=${SERVICES:-1000}
DURATION=${DURATION:-10s}
SEED_COUNT=${SEED_COUNT:-100000}
REGISTER_TTL=${REGISTER_TTL:-10m}
SEED_TTL=${SEED_TTL:-none}
RESTART_TIMEOUT=${RESTART_TIMEOUT:-120}
SKIP_BUILD=${SKIP_BUILD:-0}
ACL=${ACL:-1}
# The token wait_leader presents (ignored by an agent with ACLs off).
WAIT_TOKEN=
KEEP_TMP=${KEEP_TMP:-0}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/signpost-bench.XXXXXX")

cleanup() {
    stop_all
    if [[ $KEEP_TMP == 1 ]]; then
        echo "kept $TMP (agent logs, JSON reports, data dirs)" >&2
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT

if [[ $SKIP_BUILD != 1 ]]; then
    log "building (release)"
    cargo build --release -p signpost -p signpost-bench
fi
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
SIGNPOST=$TARGET_DIR/release/signpost
BENCH=$TARGET_DIR/release/signpost-bench

# CPU seconds (user + system) a process has used so far; clock ticks assumed 100/s.
proc_cpu() {
    sed 's/.*) //' "/proc/$1/stat" | awk '{ printf "%.2f\n", ($12 + $13) / 100 }'
}

# start_agent DATA_DIR PORT LOG [ARGS...]: starts a durable agent in the background; sets
# AGENT_PID.
start_agent() {
    "$SIGNPOST" agent --data-dir "$1" --http-addr "127.0.0.1:$2" "${@:4}" >>"$3" 2>&1 &
    AGENT_PID=$!
    PIDS+=("$AGENT_PID")
}

# wait_leader PORT SECONDS: polls /api/v1/agent/self until the agent answers as Raft leader.
wait_leader() {
    local deadline=$((SECONDS + $2)) body
    while ((SECONDS < deadline)); do
        if body=$(curl -sf --max-time 1 -H "X-Consul-Token: $WAIT_TOKEN" "http://127.0.0.1:$1/api/v1/agent/self") &&
            python3 -c 'import json, sys; sys.exit(json.loads(sys.argv[1])["raft"]["role"] != "leader")' "$body"; then
            return 0
        fi
        kill -0 "$AGENT_PID" 2>/dev/null || { echo "agent exited; log:" >&2; cat "$LOG" >&2; return 1; }
        sleep 0.05
    done
    echo "agent on port $1 not leader after $2 s; log:" >&2
    cat "$LOG" >&2
    return 1
}

# Samples, every 0.2 s until killed, the most established TCP connections to the agent's
# $PORT seen at once (from /proc/net/tcp, so no ss needed), into $TMP/connections.
sample_connections() {
    local hex max=0 n
    hex=$(printf '%04X' "$PORT")
    while :; do
        n=$(awk -v p=":$hex" '$2 ~ p"$" && $4 == "01"' /proc/net/tcp /proc/net/tcp6 2>/dev/null | wc -l)
        if ((n > max)); then
            max=$n
            echo "$max" >"$TMP/connections"
        fi
        sleep 0.2
    done
}

# phase NAME ARGS...: runs signpost-bench with --json into $TMP/NAME.json (table on stderr),
# and records the agent's CPU seconds over the phase in $TMP/NAME.agent_cpu.
phase() {
    local name=$1 before after
    shift
    log "$name"
    before=$(proc_cpu "$AGENT_PID")
    if ! "$BENCH" --addr "$ADDR" --json --quiet "$@" >"$TMP/$name.json"; then
        echo "phase $name failed; agent log tail:" >&2
        tail -n 20 "$LOG" >&2
        exit 1
    fi
    after=$(proc_cpu "$AGENT_PID")
    python3 -c 'import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 2))' "$before" "$after" \
        >"$TMP/$name.agent_cpu"
}

# ---- throughput: one durable agent, register then discover -------------------------------
PORT=$(free_port)
ADDR=http://127.0.0.1:$PORT
LOG=$TMP/agent-throughput.log
log "starting agent on $ADDR (data dir $TMP/data)"
start_agent "$TMP/data" "$PORT" "$LOG"
wait_leader "$PORT" 30

sample_connections &
SAMPLER=$!
PIDS+=("$SAMPLER")
phase register register --clients "$CLIENTS" --count "$COUNT" --services "$SERVICES" --ttl "$REGISTER_TTL"
stop_pid "$SAMPLER"
CONNS=$(cat "$TMP/connections" 2>/dev/null || echo "?")
phase discover-10 discover --clients "$CLIENTS" --duration "$DURATION" --instances 10
phase discover-100 discover --clients "$CLIENTS" --duration "$DURATION" --instances 100
stop_pid "$AGENT_PID"

# ---- ACL cost: the same phases against a fresh agent with ACLs on -------------------------
if [[ $ACL == 1 ]]; then
    PORT=$(free_port)
    ADDR=http://127.0.0.1:$PORT
    LOG=$TMP/agent-acl.log
    WAIT_TOKEN=bench-management-token
    printf '[acl]\nenabled = true\ninitial_management_token = "%s"\n' "$WAIT_TOKEN" >"$TMP/acl.toml"
    log "starting an agent with ACLs on at $ADDR (data dir $TMP/acl)"
    start_agent "$TMP/acl" "$PORT" "$LOG" --config "$TMP/acl.toml"
    wait_leader "$PORT" 30
    # A token with a few rules, as an application would hold: the bench's services, not the
    # reserved ones, KV reads but not secrets.
    RULES='service_prefix "" { policy = "write" }
service "admin" { policy = "deny" }
service_prefix "internal-" { policy = "read" }
key_prefix "" { policy = "read" }
key_prefix "secret/" { policy = "deny" }
agent_prefix "" { policy = "read" }'
    python3 -c 'import json, sys; print(json.dumps({"Name": "bench", "Rules": sys.argv[1]}))' "$RULES" |
        curl -sf -X PUT -H "X-Consul-Token: $WAIT_TOKEN" --data-binary @- "$ADDR/v1/acl/policy" >/dev/null
    ACL_TOKEN=$(curl -sf -X PUT -H "X-Consul-Token: $WAIT_TOKEN" \
        -d '{"Description": "bench", "Policies": [{"Name": "bench"}]}' "$ADDR/v1/acl/token" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["SecretID"])')
    phase register-acl register --clients "$CLIENTS" --count "$COUNT" --services "$SERVICES" \
        --ttl "$REGISTER_TTL" --token "$ACL_TOKEN"
    phase discover-10-acl discover --clients "$CLIENTS" --duration "$DURATION" --instances 10 \
        --token "$ACL_TOKEN"
    stop_pid "$AGENT_PID"
    WAIT_TOKEN=
fi

# ---- restart: seed a fresh durable agent, kill -9, time the way back ----------------------
PORT=$(free_port)
ADDR=http://127.0.0.1:$PORT
LOG=$TMP/agent-restart.log
log "starting a fresh agent on $ADDR (data dir $TMP/restart)"
start_agent "$TMP/restart" "$PORT" "$LOG"
wait_leader "$PORT" 30
phase seed seed --clients "$CLIENTS" --count "$SEED_COUNT" --services "$SERVICES" --ttl "$SEED_TTL"

log "kill -9 $AGENT_PID"
{ kill -KILL "$AGENT_PID" && wait "$AGENT_PID"; } 2>/dev/null || true
forget_pid "$AGENT_PID"
DATA_SIZE=$(du -sh "$TMP/restart" | cut -f1)

log "restarting; waiting until /api/v1/services lists $SEED_COUNT instances"
START_NS=$(date +%s%N)
start_agent "$TMP/restart" "$PORT" "$LOG"
if ! python3 - "$ADDR" "$SEED_COUNT" "$START_NS" "$RESTART_TIMEOUT" >"$TMP/restart.json" <<'EOF'; then
import json, sys, time, urllib.request

addr, want, start_ns, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
since = lambda: (time.time_ns() - start_ns) / 1e9
first_answer, first_seen, seen = None, None, None
while True:
    try:
        with opener.open(f"{addr}/api/v1/services", timeout=2) as r:
            services = json.load(r)
        seen = sum(s["instances"]["passing"] + s["instances"]["warning"] + s["instances"]["critical"]
                   for s in services)
        if first_answer is None:
            first_answer, first_seen = since(), seen
        if seen == want:
            print(json.dumps({"restart_s": since(), "first_answer_s": first_answer,
                              "first_answer_instances": first_seen, "instances": seen}))
            sys.exit(0)
    except (OSError, ValueError):
        pass
    if since() > timeout:
        print(json.dumps({"restart_s": None, "first_answer_s": first_answer,
                          "first_answer_instances": first_seen, "instances": seen}))
        sys.exit(1)
    time.sleep(0.01)
EOF
    echo "restarted agent did not serve $SEED_COUNT instances within ${RESTART_TIMEOUT}s: $(cat "$TMP/restart.json")" >&2
    tail -n 20 "$LOG" >&2
    exit 1
fi
READY_LINE=$(grep -o 'signpost agent ready in [^ ]*' "$LOG" | tail -n 1 || true)
stop_pid "$AGENT_PID"

# ---- summary ------------------------------------------------------------------------------
log "summary"
python3 - "$TMP" "$DATA_SIZE" "$CONNS" "${READY_LINE##* }" "$ACL" <<'EOF'
import json, os, sys

tmp, data_size, conns, ready, acl = sys.argv[1:6]

def load(name):
    with open(os.path.join(tmp, name + ".json")) as f:
        r = json.load(f)
    with open(os.path.join(tmp, name + ".agent_cpu")) as f:
        r["agent_cpu"] = float(f.read())
    return r

rows = [("phase", "clients", "ok", "errors", "secs", "rate/s", "p50 ms", "p99 ms", "max ms",
         "gen cpu s", "agent cpu s")]
phases = [("register", "register"), ("discover-10", "discover 10 inst"),
          ("discover-100", "discover 100 inst"), ("seed", "seed")]
if acl == "1":
    phases[3:3] = [("register-acl", "register, ACL on"), ("discover-10-acl", "discover 10, ACL on")]
for name, label in phases:
    r = load(name)
    l = r["latency_ms"]
    rows.append((label, str(r["clients"]), str(r["ok"]), str(r["errors"]), f'{r["duration_s"]:.1f}',
                 f'{r["rate_per_s"]:.0f}', f'{l["p50"]:.2f}', f'{l["p99"]:.2f}', f'{l["max"]:.2f}',
                 f'{r["generator_cpu_s"]:.1f}', f'{r["agent_cpu"]:.1f}'))
widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
for row in rows:
    print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))

with open(os.path.join(tmp, "restart.json")) as f:
    restart = json.load(f)
print()
print(f'connections open during register: {conns}')
print(f'restart after kill -9 with {restart["instances"]} instances: {restart["restart_s"]:.2f} s '
      f'from spawn until all listed (first answer after {restart["first_answer_s"]:.2f} s with '
      f'{restart["first_answer_instances"]} instances; agent log says ready in {ready or "?"})')
print(f'data dir size before restart: {data_size}')
if acl == "1":
    for off, on, what in [("register", "register-acl", "registrations"),
                          ("discover-10", "discover-10-acl", "list reads")]:
        a, b = load(off)["rate_per_s"], load(on)["rate_per_s"]
        print(f'ACL on vs off, {what}: {b:.0f}/s vs {a:.0f}/s ({(b - a) / a * 100:+.1f} %)')
EOF
