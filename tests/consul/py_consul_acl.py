#!/usr/bin/env python3
"""Drives Signpost's ACLs with the real py-consul client (PyPI `py-consul`).

Run against a fresh agent with ACLs on and a management token (the end-to-end test
crates/signpost/tests/e2e/consul_clients.rs does exactly that):

    python3 tests/consul/py_consul_acl.py --addr 127.0.0.1:8500 --root <management secret>

As management it creates a policy (rules as py-consul sends them: JSON text) and a token for it;
then, with that token, it registers what the policy allows, is refused (ACLPermissionDenied)
where it does not, and reads a catalog filtered to what the token may see. An unknown token and
no token are refused too. Exits 0 when every check passed, naming the failed check otherwise.
"""

import argparse
import sys

try:
    import consul
except ImportError as exc:
    sys.exit(f"py_consul_acl: cannot import the py-consul client ({exc}); scripts/test.sh installs it")

passed = 0


def check(name, cond, detail=""):
    global passed
    if not cond:
        sys.exit(f"FAILED: {name}: {detail}")
    passed += 1
    print(f"ok: {name}")


def refused(name, fn):
    try:
        fn()
    except consul.ACLPermissionDenied as e:
        check(name, True)
        return str(e)
    check(name, False, "the call was not refused")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--root", required=True)
    args = ap.parse_args()
    host, port = args.addr.rsplit(":", 1)
    port = int(port)

    root = consul.Consul(host=host, port=port, token=args.root)
    root.agent.service.register("db", service_id="db-1", address="10.0.0.2", port=5432)
    rules = {"service": {"api": {"policy": "write"}}, "key_prefix": {"app/": {"policy": "write"}}}
    policy = root.acl.policy.create("py-api", rules=rules)
    check("policy created", policy.get("Name") == "py-api", policy)
    created = root.acl.token.create(policies_name=["py-api"], description="py", expiration_ttl="1h")
    secret = created.get("SecretID")
    check("token created with its secret", bool(secret), created)
    check("token expires", bool(created.get("ExpirationTime")), created)

    user = consul.Consul(host=host, port=port, token=secret)
    me = user.acl.token.read_self()
    check("token/self", me["AccessorID"] == created["AccessorID"], me)
    check("token/self hides the secret", "SecretID" not in me or me["SecretID"] != secret, me)
    user.agent.service.register("api", service_id="api-1", address="10.0.0.1", port=80)
    _, nodes = user.health.service("api")
    check("registered what the policy allows", [n["Service"]["ID"] for n in nodes] == ["api-1"], nodes)
    msg = refused(
        "register outside the policy",
        lambda: user.agent.service.register("db", service_id="db-2", address="10.0.0.3", port=1),
    )
    check("the refusal names the right", "service:write" in msg and "db" in msg, msg)
    check("kv inside the policy", user.kv.put("app/x", "1") is True)
    refused("kv outside the policy", lambda: user.kv.put("other", "1"))
    _, services = user.catalog.services()
    check("catalog filtered to what the token reads", sorted(services) == ["api"], services)
    _, db = user.health.service("db")
    check("a service the token cannot read is empty", db == [], db)
    _, all_services = root.catalog.services()
    check("management sees everything", sorted(all_services) == ["api", "db"], all_services)
    _, db_nodes = root.health.service("db")
    check("the refused register changed nothing", [n["Service"]["ID"] for n in db_nodes] == ["db-1"], db_nodes)

    anonymous = consul.Consul(host=host, port=port)
    refused("no token", lambda: anonymous.agent.service.register("api", service_id="api-2", port=81))
    unknown = consul.Consul(host=host, port=port, token="not-a-token")
    msg = refused("unknown token", lambda: unknown.catalog.services())
    check("unknown token says ACL not found", "ACL not found" in msg, msg)

    print(f"{passed} checks passed")


if __name__ == "__main__":
    main()
