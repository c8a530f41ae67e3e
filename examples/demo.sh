#!/usr/bin/env bash
# The SDK demo: an agent, two instances each of user-service and product-service, and the
# consumer, an HTTP service calling both through ServiceClient, driven here with curl. Shows the
# calls spread over the instances, the user-service's CRUD, its settings changing live from the
# KV store, and then kills one user-service instance with SIGKILL: the consumer keeps answering
# and the agent's HTTP check marks the instance critical. Along the way one request goes
# through the gateway with tracing on, and its trace (gateway -> consumer -> user-service, as
# an OTLP receiver got it from the three processes) is printed as a tree. Everything started
# here is stopped by PID on exit.
#
#   examples/demo.sh            # release build (first build takes a few minutes)
#   PROFILE=dev examples/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${PROFILE:-release}"
if [ "$profile" = release ]; then
  cargo build --release -q -p signpost -p user-service -p product-service -p consumer -p otlp-dump
  bin=target/release
else
  cargo build -q -p signpost -p user-service -p product-service -p consumer -p otlp-dump
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

# Tracing: an OTLP/HTTP receiver waiting for one trace; the services and the gateway started
# from here on export their spans to it (OTEL_EXPORTER_OTLP_ENDPOINT).
trace_id=4bf92f3577b34da6a3ce929d0e0e4736
"$bin/otlp-dump" --trace "$trace_id" --services gateway,consumer,user-service \
  >"$logs/otlp-dump.log" 2>&1 &
dump_pid=$!
pids+=($dump_pid)
wait_for_line "$logs/otlp-dump.log" "listening on"
OTEL_EXPORTER_OTLP_ENDPOINT="$(sed -n 's/^otlp-dump listening on //p' "$logs/otlp-dump.log")"
export OTEL_EXPORTER_OTLP_ENDPOINT

echo "== the user-service's settings, in the KV store"
"$bin/signpost" kv put app/user-service/config '{"greeting":"Hello","page_size":3}' >/dev/null
echo "   app/user-service/config = $("$bin/signpost" kv get app/user-service/config)"

start_service() { # name index
  "$bin/$1" --port 0 --id "$1-$2" >"$logs/$1-$2.log" 2>&1 &
  pids+=($!)
  wait_for_line "$logs/$1-$2.log" "listening on"
  echo "   $(grep 'listening on' "$logs/$1-$2.log") (pid $!)"
}

echo "== starting two instances of each service"
start_service user-service 1
victim_pid=$!
victim_url="$(grep 'listening on' "$logs/user-service-1.log" | sed -E 's/.*listening on //')"
start_service user-service 2
start_service product-service 1
start_service product-service 2

# Waits (up to 20 s) until user-service instance $1 has status $2.
wait_for_status() {
  local i
  for i in $(seq 200); do
    if "$bin/signpost" instances user-service --all | grep "$1" | grep -q "$2"; then
      return
    fi
    sleep 0.1
  done
  echo "timed out waiting for $1 to be $2" >&2
  "$bin/signpost" instances user-service --all >&2
  exit 1
}
echo "-- the agent checks the user-service's /health itself (HTTP check, no heartbeats):"
wait_for_status user-service-1 passing
wait_for_status user-service-2 passing
"$bin/signpost" instances user-service
"$bin/signpost" instances product-service

consumer_port="$(free_port 18600)"
consumer="http://127.0.0.1:$consumer_port"
echo "== starting the consumer on $consumer (its port from \$PORT)"
PORT="$consumer_port" "$bin/consumer" >"$logs/consumer.log" 2>&1 &
pids+=($!)
wait_for_line "$logs/consumer.log" "listening on"

echo "-- curl the consumer: calls spread over the instances"
for id in 1 2 3 4; do
  echo "   GET /client/users/$id    -> $(curl -sf "$consumer/client/users/$id")"
done
for id in 1 2; do
  echo "   GET /client/products/$id -> $(curl -sf "$consumer/client/products/$id")"
done

echo "== create, read, update and delete on one user-service instance ($victim_url)"
json=(-H 'content-type: application/json')
echo "   POST   /users   -> $(curl -sf -X POST "${json[@]}" "$victim_url/users" -d '{"name":"Ken Thompson","email":"ken@example.com"}')"
echo "   GET    /users/6 -> $(curl -sf "$victim_url/users/6")"
echo "   PUT    /users/6 -> $(curl -sf -X PUT "${json[@]}" "$victim_url/users/6" -d '{"email":"ken@bell-labs.com"}')"
echo "   DELETE /users/6 -> $(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$victim_url/users/6")"
echo "   GET    /users/6 -> $(curl -s -w ' (%{http_code})' "$victim_url/users/6")"
echo "   POST   /users {} -> $(curl -s -w ' (%{http_code})' -X POST "${json[@]}" "$victim_url/users" -d '{}')"

echo "== changing the settings live: greeting Bonjour, page size 2"
"$bin/signpost" kv put app/user-service/config '{"greeting":"Bonjour","page_size":2}' >/dev/null
for i in $(seq 100); do
  a="$(curl -sf "$consumer/client/users/1")"
  b="$(curl -sf "$consumer/client/users/1")"
  if [[ "$a" == *Bonjour* && "$b" == *Bonjour* ]]; then
    break
  fi
  if [ "$i" -eq 100 ]; then
    echo "the settings did not reach both instances" >&2
    exit 1
  fi
  sleep 0.1
done
echo "   GET /client/users/1 -> $a"
echo "   GET /client/users/1 -> $b"
echo "   GET $victim_url/users -> $(curl -sf "$victim_url/users")"
grep -h '^settings' "$logs"/user-service-*.log | sed 's/^/   /'

echo "== one request through the gateway, traced"
gateway_port="$(free_port 18700)"
gateway="http://127.0.0.1:$gateway_port"
cat >"$logs/gateway.toml" <<EOF
listen = "127.0.0.1:$gateway_port"
admin_listen = "127.0.0.1:$(free_port 18750)"
[registry]
addrs = ["$agent"]
routes_from_metadata = false
[[route]]
prefix = "/client"
service = "consumer"
[telemetry]
service_name = "gateway"
EOF
"$bin/signpost" gateway --config "$logs/gateway.toml" >"$logs/gateway.log" 2>&1 &
pids+=($!)
for i in $(seq 200); do
  if curl -sf -o /dev/null "$gateway/client/users/1"; then
    break
  fi
  if [ "$i" -eq 200 ]; then
    echo "the gateway did not route to the consumer" >&2
    tail -n 20 "$logs/gateway.log" >&2
    exit 1
  fi
  sleep 0.1
done
echo "   GET $gateway/client/users/2 (traceparent: 00-$trace_id-00f067aa0ba902b7-01)"
echo "   -> $(curl -sf -H "traceparent: 00-$trace_id-00f067aa0ba902b7-01" "$gateway/client/users/2")"
echo "-- its trace, as the OTLP receiver got it from the gateway, the consumer and user-service:"
if ! wait "$dump_pid"; then
  echo "the trace did not arrive complete" >&2
  cat "$logs/otlp-dump.log" >&2
  exit 1
fi
grep -v '^otlp-dump listening' "$logs/otlp-dump.log" | sed 's/^/   /'

echo "== killing user-service-1 (SIGKILL, pid $victim_pid): no deregistration"
{ kill -9 "$victim_pid" && wait "$victim_pid"; } 2>/dev/null || true
failed=0
calls=0
for i in $(seq 60); do
  calls=$((calls + 1))
  if ! curl -sf "$consumer/client/users/$(( i % 5 + 1 ))" >/dev/null; then
    failed=$((failed + 1))
  fi
  sleep 0.1
done
echo "-- the agent's HTTP check marks it critical:"
wait_for_status user-service-1 critical
"$bin/signpost" instances user-service --all
retried="$(grep -c '^call service=user-service.*attempts=[2-9]' "$logs/consumer.log" || true)"
echo "-- calls through the consumer since the kill: $calls, failed: $failed; calls that needed a retry: $retried"

if [ "$failed" -eq 0 ]; then
  echo "== demo OK: no call failed while an instance died"
else
  echo "== demo: $failed call(s) failed while an instance died"
  exit 1
fi
