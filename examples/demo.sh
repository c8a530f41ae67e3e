#!/usr/bin/env bash
# The SDK demo: an agent, two instances each of user-service and product-service, and a consumer
# calling both through ServiceClient. Shows the calls spread over the instances, kills one
# instance with SIGKILL, and shows the consumer keeps succeeding. Everything started here is
# stopped by PID on exit.
#
#   examples/demo.sh            # release build (first build takes a few minutes)
#   PROFILE=dev examples/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${PROFILE:-release}"
if [ "$profile" = release ]; then
  cargo build --release -q -p signpost -p user-service -p product-service -p consumer
  bin=target/release
else
  cargo build -q -p signpost -p user-service -p product-service -p consumer
  bin=target/debug
fi

logs="$(mktemp -d -t signpost-demo.XXXXXX)"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  echo "logs kept in $logs"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free loopback port: the first in a range nothing answers on.
free_port() {
  local port
  for port in $(seq "$1" $(( $1 + 200 ))); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
  echo "no free port near $1" >&2
  exit 1
}

# Waits (up to 20 s) until $2 appears in file $1.
wait_for_line() {
  local i
  for i in $(seq 200); do
    if grep -q "$2" "$1" 2>/dev/null; then
      return
    fi
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1" >&2
  tail -n 20 "$1" >&2
  exit 1
}

port="$(free_port 18500)"
agent="http://127.0.0.1:$port"
export SIGNPOST_ADDR="$agent"

echo "== starting the agent on $agent"
"$bin/signpost" agent --dev --no-dns --http-addr "127.0.0.1:$port" >"$logs/agent.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  if "$bin/signpost" services >/dev/null 2>&1; then
    break
  fi
  sleep 0.1
done
"$bin/signpost" services >/dev/null

start_service() { # name index
  "$bin/$1" --port 0 --id "$1-$2" >"$logs/$1-$2.log" 2>&1 &
  pids+=($!)
  wait_for_line "$logs/$1-$2.log" "listening on"
  echo "   $(grep 'listening on' "$logs/$1-$2.log") (pid $!)"
}

echo "== starting two instances of each service"
start_service user-service 1
victim_pid=$!
start_service user-service 2
start_service product-service 1
start_service product-service 2
"$bin/signpost" instances user-service
"$bin/signpost" instances product-service

echo "== starting the consumer (a call to each service every 100 ms)"
"$bin/consumer" --interval 100ms --report-every 10 >"$logs/consumer.log" 2>&1 &
pids+=($!)
wait_for_line "$logs/consumer.log" "summary service=product-service"
sleep 3
echo "-- calls spread over the instances:"
grep '^call' "$logs/consumer.log" | tail -n 8 | sed 's/^/   /'
grep '^summary' "$logs/consumer.log" | tail -n 2 | sed 's/^/   /'

echo "== killing user-service-1 (SIGKILL, pid $victim_pid): no deregistration, its TTL lapses"
before_failed="$(grep '^summary service=user-service' "$logs/consumer.log" | tail -n 1 | sed -E 's/.*failed=([0-9]+).*/\1/')"
{ kill -9 "$victim_pid" && wait "$victim_pid"; } 2>/dev/null || true
sleep 6
echo "-- the consumer keeps succeeding:"
grep '^call service=user-service' "$logs/consumer.log" | tail -n 6 | sed 's/^/   /'
grep '^summary' "$logs/consumer.log" | tail -n 2 | sed 's/^/   /'
after_failed="$(grep '^summary service=user-service' "$logs/consumer.log" | tail -n 1 | sed -E 's/.*failed=([0-9]+).*/\1/')"
retried="$(grep -c '^call service=user-service.*attempts=[2-9]' "$logs/consumer.log" || true)"
echo "-- user-service calls failed since the kill: $(( after_failed - before_failed )); calls that needed a retry: $retried"
"$bin/signpost" instances user-service --all

if [ "$(( after_failed - before_failed ))" -eq 0 ]; then
  echo "== demo OK: no call failed while an instance died"
else
  echo "== demo: $(( after_failed - before_failed )) call(s) failed while an instance died"
  exit 1
fi
