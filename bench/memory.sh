#!/usr/bin/env bash
# Usage: bench/memory.sh COUNT ROUNDS OLD_BIN NEW_BIN BENCH_BIN
# The memory scenario of `signpost-bench compare` by hand, Signpost only: a durable agent
# (same config and flags as compare's), RSS at start, COUNT registrations of the bench payload
# with a 1 h TTL check over 1,000 services from 64 connections, RSS after; old and new alternate.
set -u
COUNT=$1; ROUNDS=$2; OLD=$3; NEW=$4; BENCH=$5
PAYLOAD=296
rss() { awk '/VmRSS/ {print $2*1024}' /proc/$1/status; }
for round in $(seq 1 "$ROUNDS"); do
  for which in old new; do
    bin=$OLD; [ $which = new ] && bin=$NEW
    dir=$(mktemp -d ${TMPDIR:-/tmp}/signpost-mem.XXXX)
    printf "[limits]\nhttp_max_conns_per_client = 0\nmax_blocking_per_client = 0\nmax_instances = 2000000\n" > "$dir/signpost.toml"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$bin" agent --config "$dir/signpost.toml" --data-dir "$dir/data" --http-addr 127.0.0.1:$port --no-dns > "$dir/log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -sf http://127.0.0.1:$port/health >/dev/null && break; sleep 0.2; done
    sleep 3
    base=$(rss $pid)
    start=$(date +%s)
    "$BENCH" --quiet register --addr http://127.0.0.1:$port --count "$COUNT" --clients 64 --services 1000 --ttl 1h --prefix mem > "$dir.fill" 2>&1
    ok=$?
    end=$(date +%s)
    sleep 5
    now=$(rss $pid); reg=$(curl -s http://127.0.0.1:$port/api/v1/services | python3 -c "import sys,json; d=json.load(sys.stdin); d=d[\"services\"] if isinstance(d,dict) else d; print(sum(s[\"instances\"][\"passing\"]+s[\"instances\"][\"warning\"]+s[\"instances\"][\"critical\"] for s in d))")
    python3 -c "
base,now,n=$base,$now,$reg
per=(now-base)/n
print(f'registered {n}: round $round $which: fill rc=$ok {$end-$start}s, RSS {now/2**20:.0f} MiB (base {base/2**20:.1f}), {per:.0f} B/instance, overhead {per-$PAYLOAD:.0f} B beyond the {$PAYLOAD}-byte payload')"
    kill $pid; wait $pid 2>/dev/null
    rm -rf "$dir" "$dir.fill"
  done
done
