#!/usr/bin/env python3
"""Drives Signpost's Consul-compatible HTTP API with the real py-consul client (PyPI `py-consul`).

Run against a fresh agent (`signpost agent --dev`); the end-to-end test
crates/signpost/tests/e2e/consul_clients.rs does exactly that:

    python3 tests/consul/py_consul_check.py --addr 127.0.0.1:8500

It registers services with an HTTP check (against a small HTTP server this script runs on
127.0.0.1) and a TTL check, renews the TTL check, lists passing instances, reads the catalog,
exercises the KV store (put, get, cas, flags, recurse, keys, delete) and blocking health queries,
and deregisters. Exits 0 when every check passed; otherwise non-zero, naming the failed check
and what the agent answered. A missing py-consul is an error, never a skip.
"""

import argparse
import http.server
import sys
import threading
import time
import traceback

try:
    import consul
except ImportError as exc:
    sys.exit(
        f"py_consul_check: cannot import the py-consul client ({exc}). "
        "Install it with `python3 -m pip install py-consul` (scripts/test.sh does this)."
    )

SERVICE = "py-api"
PASSED = 0


def ok(what):
    global PASSED
    PASSED += 1
    print(f"ok   {what}", flush=True)


def expect(cond, what, got=None):
    """Records a passed check, or fails with what was seen instead."""
    if not cond:
        raise AssertionError(f"{what}\n     got: {got!r}")
    ok(what)


def poll(what, probe, timeout=10.0, interval=0.05):
    """Calls probe() -> (done, seen) until done, or fails after timeout with the last seen."""
    deadline = time.monotonic() + timeout
    while True:
        done, seen = probe()
        if done:
            ok(what)
            return seen
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}\n     last: {seen!r}")
        time.sleep(interval)


class HealthHandler(http.server.BaseHTTPRequestHandler):
    """Answers 200 on /health (and counts the probes), 404 elsewhere."""

    hits = 0

    def do_GET(self):  # noqa: N802 (the stdlib's name)
        if self.path == "/health":
            HealthHandler.hits += 1
            code, body = 200, b"ok\n"
        else:
            code, body = 404, b"not found\n"
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def ids(entries):
    return sorted(e["Service"]["ID"] for e in entries or [])


class Blocking:
    """A blocking `health.service(SERVICE, index=..., wait=...)` running in its own thread."""

    def __init__(self, host, port, index, wait="10s"):
        # A client of its own: a requests session is not meant to be shared across threads.
        self.client = consul.Consul(host=host, port=port)
        self.index = index
        self.result = None
        self.error = None
        self.returned_at = None
        self.thread = threading.Thread(target=self._run, args=(wait,), daemon=True)
        self.started_at = time.monotonic()
        self.thread.start()

    def _run(self, wait):
        try:
            self.result = self.client.health.service(SERVICE, index=self.index, wait=wait)
        except Exception as exc:  # reported by the main thread
            self.error = exc
        self.returned_at = time.monotonic()

    def still_blocking_after(self, seconds):
        self.thread.join(seconds)
        return self.thread.is_alive()

    def wait_answer(self, timeout):
        self.thread.join(timeout)
        if self.error is not None:
            raise AssertionError(f"the blocking query failed: {self.error!r}")
        return self.result


def run(host, port):
    c = consul.Consul(host=host, port=port)

    health_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HealthHandler)
    threading.Thread(target=health_server.serve_forever, daemon=True).start()
    hport = health_server.server_address[1]

    me = c.agent.self()
    node = me["Config"]["NodeName"]
    expect(bool(me["Config"]["Datacenter"]) and bool(node), "agent.self() names the datacenter and node", me)

    # --- registration with an HTTP check and with a TTL check ------------------------------
    registered = c.agent.service.register(
        SERVICE,
        service_id="py-api-http",
        address="127.0.0.1",
        port=hport,
        tags=["http", "v1"],
        meta={"kind": "http"},
        check=consul.Check.http(f"http://127.0.0.1:{hport}/health", interval="500ms", timeout="2s"),
    )
    expect(registered is True, "agent.service.register with an HTTP check", registered)
    ttl_check = dict(consul.Check.ttl("30s"), status="critical")
    registered = c.agent.service.register(
        SERVICE,
        service_id="py-api-ttl",
        address="127.0.0.1",
        port=9001,
        tags=["ttl"],
        meta={"kind": "ttl"},
        check=ttl_check,
    )
    expect(registered is True, "agent.service.register with a TTL check (starting critical)", registered)

    services = c.agent.services()
    expect(
        {"py-api-http", "py-api-ttl"} <= set(services)
        and services["py-api-http"]["Service"] == SERVICE
        and services["py-api-http"]["Port"] == hport
        and services["py-api-http"]["Tags"] == ["http", "v1"]
        and services["py-api-http"]["Meta"] == {"kind": "http"},
        "agent.services() lists both registrations with their port, tags and meta",
        services,
    )
    checks = c.agent.checks()
    expect(
        checks.get("service:py-api-ttl", {}).get("Status") == "critical"
        and checks.get("service:py-api-ttl", {}).get("ServiceID") == "py-api-ttl"
        and checks.get("service:py-api-http", {}).get("ServiceID") == "py-api-http",
        "agent.checks() has service:<id> checks, the TTL one critical",
        checks,
    )

    _, passing = c.health.service(SERVICE, passing=True)
    expect("py-api-ttl" not in ids(passing), "health.service(passing=True) omits the critical TTL instance", passing)

    # --- TTL pass -----------------------------------------------------------------------------
    expect(c.agent.check.ttl_pass("service:py-api-ttl") is True, "agent.check.ttl_pass('service:py-api-ttl')")
    poll(
        "health.service(passing=True) lists the TTL instance after ttl_pass",
        lambda: (lambda p: ("py-api-ttl" in ids(p), p))(c.health.service(SERVICE, passing=True)[1]),
        timeout=5,
    )

    # --- the HTTP check: passing once the agent has probed the script's server ----------------
    passing = poll(
        "health.service(passing=True) lists the HTTP-checked instance once its check ran",
        lambda: (lambda p: (ids(p) == ["py-api-http", "py-api-ttl"], p))(
            c.health.service(SERVICE, passing=True)[1]
        ),
        timeout=15,
    )
    expect(HealthHandler.hits > 0, "the agent's HTTP check probed /health", HealthHandler.hits)
    entry = next(e for e in passing if e["Service"]["ID"] == "py-api-http")
    service_checks = {ch["CheckID"]: ch for ch in entry["Checks"]}
    expect(
        entry["Node"]["Node"] == node
        and entry["Service"]["Service"] == SERVICE
        and entry["Service"]["Address"] == "127.0.0.1"
        and entry["Service"]["Port"] == hport
        and entry["Service"]["Meta"] == {"kind": "http"}
        and service_checks.get("service:py-api-http", {}).get("Status") == "passing"
        and all(ch["Status"] == "passing" for ch in entry["Checks"]),
        "a passing health entry has Node, Service and all-passing Checks",
        entry,
    )
    index, tagged = c.health.service(SERVICE, tag="ttl")
    expect(ids(tagged) == ["py-api-ttl"] and int(index) > 0, "health.service(tag='ttl') filters by tag", tagged)

    # --- the catalog ------------------------------------------------------------------------
    index, catalog = c.catalog.services()
    expect(
        int(index) > 0 and sorted(catalog.get(SERVICE, [])) == ["http", "ttl", "v1"],
        "catalog.services() maps the service to the union of its tags",
        catalog,
    )
    _, nodes = c.catalog.service(SERVICE)
    flat = {n["ServiceID"]: n for n in nodes or []}
    expect(
        sorted(flat) == ["py-api-http", "py-api-ttl"]
        and flat["py-api-http"]["ServicePort"] == hport
        and flat["py-api-http"]["ServiceAddress"] == "127.0.0.1"
        and flat["py-api-http"]["ServiceTags"] == ["http", "v1"]
        and flat["py-api-http"]["ServiceMeta"] == {"kind": "http"}
        and flat["py-api-http"]["Node"] == node,
        "catalog.service() answers the flat shape",
        nodes,
    )

    # --- KV -----------------------------------------------------------------------------------
    kv = c.kv
    expect(kv.put("py/a", "one") is True, "kv.put('py/a')")
    index, got = kv.get("py/a")
    expect(
        got is not None and got["Value"] == b"one" and got["Key"] == "py/a" and int(index) > 0,
        "kv.get('py/a') returns the value",
        got,
    )
    first = got["ModifyIndex"]
    expect(kv.put("py/a", "two", cas=first + 1000) is False, "kv.put with a stale cas returns False")
    expect(kv.get("py/a")[1]["Value"] == b"one", "a failed cas leaves the value", kv.get("py/a"))
    expect(kv.put("py/a", "two", cas=first) is True, "kv.put with the current ModifyIndex as cas returns True")
    _, got = kv.get("py/a")
    expect(got["Value"] == b"two" and got["ModifyIndex"] > first, "a matching cas wrote the value", got)
    expect(kv.put("py/a", "three", cas=first) is False, "the old cas no longer matches")
    expect(kv.put("py/a", "x", cas=0) is False, "cas=0 on an existing key returns False")
    expect(kv.put("py/b", "bee", cas=0) is True, "cas=0 creates a missing key")
    expect(kv.put("py/c/d", "deep", flags=42) is True, "kv.put with flags")
    expect(kv.get("py/c/d")[1]["Flags"] == 42, "kv.get returns the flags", kv.get("py/c/d"))
    expect(kv.put("other/x", "x") is True, "kv.put outside the prefix")
    _, entries = kv.get("py/", recurse=True)
    expect(
        [(e["Key"], e["Value"]) for e in entries or []]
        == [("py/a", b"two"), ("py/b", b"bee"), ("py/c/d", b"deep")],
        "kv.get(recurse=True) lists the prefix in key order",
        entries,
    )
    _, keys = kv.get("py/", keys=True)
    expect(keys == ["py/a", "py/b", "py/c/d"], "kv.get(keys=True) lists the keys under the prefix", keys)
    _, keys = kv.get("py/", keys=True, separator="/")
    expect(keys == ["py/a", "py/b", "py/c/"], "kv.get(keys=True, separator='/') folds at the separator", keys)
    expect(kv.get("py/missing")[1] is None, "kv.get of a missing key returns None")
    expect(kv.delete("py/b") is True, "kv.delete('py/b')")
    expect(kv.get("py/b")[1] is None, "a deleted key is gone")
    expect(kv.delete("py/", recurse=True) is True, "kv.delete('py/', recurse=True)")
    expect(kv.get("py/", recurse=True)[1] is None, "recursive delete removed the prefix", kv.get("py/", recurse=True))
    expect(kv.get("other/x")[1]["Value"] == b"x", "recursive delete left other prefixes alone")

    # --- blocking health queries --------------------------------------------------------------
    index, before = c.health.service(SERVICE)
    index = int(index)
    blocking = Blocking(host, port, index)
    # Writes to another service and to the KV store must not wake a watcher of this one.
    expect(kv.put("noise", "1") is True, "kv.put while a blocking query waits")
    expect(
        c.agent.service.register("py-other", service_id="py-other-1", address="127.0.0.1", port=9002) is True,
        "register another service while a blocking query waits",
    )
    expect(
        blocking.still_blocking_after(0.5),
        "a blocking health.service(index=current, wait='10s') is still waiting after 0.5 s "
        "and writes elsewhere",
        blocking.result,
    )
    changed_at = time.monotonic()
    expect(
        c.agent.service.register(
            SERVICE, service_id="py-api-extra", address="127.0.0.1", port=9003, check=consul.Check.ttl("30s")
        )
        is True,
        "register a new instance while the blocking query waits",
    )
    result = blocking.wait_answer(5)
    expect(result is not None, "the blocking query returned within 5 s of the registration", result)
    took = blocking.returned_at - changed_at
    new_index, entries = result
    expect(
        took < 3 and int(new_index) > index and "py-api-extra" in ids(entries),
        f"it returned {took:.2f} s after the change, index {index} -> {new_index}, with the new instance",
        (new_index, ids(entries)),
    )

    index = int(new_index)
    blocking = Blocking(host, port, index)
    expect(blocking.still_blocking_after(0.5), "a second blocking query waits", blocking.result)
    changed_at = time.monotonic()
    expect(c.agent.service.deregister("py-api-extra") is True, "deregister while the blocking query waits")
    result = blocking.wait_answer(5)
    expect(result is not None, "the blocking query returned within 5 s of the deregistration", result)
    took = blocking.returned_at - changed_at
    new_index, entries = result
    expect(
        took < 3 and int(new_index) > index and "py-api-extra" not in ids(entries),
        f"it returned {took:.2f} s after the change, index {index} -> {new_index}, without the instance",
        (new_index, ids(entries)),
    )

    # --- deregistration -------------------------------------------------------------------------
    expect(c.agent.service.deregister("py-api-http") is True, "agent.service.deregister('py-api-http')")
    _, entries = c.health.service(SERVICE)
    expect(ids(entries) == ["py-api-ttl"], "deregister removed the instance from health.service", entries)
    expect("py-api-http" not in c.agent.services(), "and from agent.services()")
    expect(c.agent.service.deregister("no-such-id") is False, "deregistering an unknown id returns False")
    expect(c.agent.service.deregister("py-api-ttl") is True, "deregister the last instance")
    _, catalog = c.catalog.services()
    expect(SERVICE not in catalog and "py-other" in catalog, "the service left catalog.services()", catalog)
    _, entries = c.health.service(SERVICE)
    expect(entries == [], "health.service of a service without instances is an empty list", entries)

    health_server.shutdown()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True, help="the agent's HTTP address, HOST:PORT")
    args = parser.parse_args()
    host, _, port = args.addr.rpartition(":")
    try:
        run(host, int(port))
    except AssertionError as exc:
        print(f"FAIL {exc}", file=sys.stderr, flush=True)
        return 1
    except Exception:  # a client error (4xx/5xx) or a malformed answer
        print("FAIL with an exception:", file=sys.stderr)
        traceback.print_exc()
        return 1
    print(f"py-consul {getattr(consul, '__version__', '?')}: all {PASSED} checks passed against {args.addr}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
