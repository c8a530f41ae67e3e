#!/usr/bin/env bash
# Web UI benchmark: how long the agent takes to render the services page (`GET /ui/`) with
# SERVICES services (2 instances each, one of every 10 services with a critical instance, tags
# on every instance), measured with curl on loopback: the whole request, from connect to the
# last byte. Prints min, p50, p90, p99 and max over REQUESTS requests, and the page's size.
# Every process this script starts is stopped by PID on exit and its temporary directory removed.
#
# Usage: bench/ui.sh
# Environment overrides (defaults in brackets):
#   SERVICES [1000]    services to register
#   REQUESTS [200]     measured requests (after 20 unmeasured ones)
#   PROFILE [release]  which build of `signpost` to run: release or debug
#   SKIP_BUILD [0]     1 = use the binary already in the target dir
set -euo pipefail

SERVICES=${SERVICES:-1000}
REQUESTS=${REQUESTS:-200}
PROFILE=${PROFILE:-release}
SKIP_BUILD=${SKIP_BUILD:-0}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

TMP=$(mktemp -d)
cleanup() {
    stop_all
    rm -rf "$TMP"
}
trap cleanup EXIT

if [[ $SKIP_BUILD != 1 ]]; then
    log "building signpost ($PROFILE)"
    if [[ $PROFILE == release ]]; then
        cargo build --release -p signpost --bin signpost --manifest-path "$ROOT/Cargo.toml"
    else
        cargo build -p signpost --bin signpost --manifest-path "$ROOT/Cargo.toml"
    fi
fi
BIN="$ROOT/target/$PROFILE/signpost"

PORT=$(free_port)
URL="http://127.0.0.1:$PORT"
log "agent --dev on $URL"
"$BIN" agent --dev --http-addr "127.0.0.1:$PORT" --no-dns >"$TMP/agent.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 300); do
    curl -sf "$URL/api/v1/agent/self" 2>/dev/null | grep -q '"role":"leader"' && break
    sleep 0.1
done

log "registering $SERVICES services"
python3 - "$URL" "$SERVICES" <<'EOF'
import json, sys, urllib.request, concurrent.futures
url, n = sys.argv[1], int(sys.argv[2])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def register(i):
    for j in range(2):
        body = {"id": f"svc-{i}-{j}", "address": "10.0.0.1", "port": 8000 + j,
                "tags": ["v1", f"team-{i % 7}"], "metadata": {"zone": "a"},
                "status": "critical" if (i % 10 == 0 and j == 0) else "passing"}
        req = urllib.request.Request(f"{url}/api/v1/services/svc-{i:04d}/instances",
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
        opener.open(req).read()
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    list(pool.map(register, range(n)))
EOF

log "measuring GET /ui/ ($REQUESTS requests)"
for _ in $(seq 20); do curl -s -o /dev/null --noproxy '*' "$URL/ui/"; done
for _ in $(seq "$REQUESTS"); do
    curl -s -o /dev/null --noproxy '*' -w '%{time_total} %{size_download}\n' "$URL/ui/"
done >"$TMP/times"
sort -n "$TMP/times" | awk -v services="$SERVICES" '
    { t[NR] = $1 * 1000; size = $2 }
    END {
        printf "services page, %d services: min %.1f ms, p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms; %d bytes\n",
            services, t[1], t[int(NR * 0.5)], t[int(NR * 0.9)], t[int(NR * 0.99)], t[NR], size
    }'
gz=$(curl -s --noproxy '*' "$URL/ui/" | gzip -9 | wc -c)
echo "page gzip -9: $gz bytes"
