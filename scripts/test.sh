#!/usr/bin/env bash
# The one test command (README: "Test it"). CI runs exactly this via .ci/run.
# Installs what the tests need, then: formatting, lints, the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests need beyond the Rust toolchain, installed only when missing.
need_pkgs=()
# etcd 3.4 for the SDK's etcd backend tests (crates/signpost-client/tests/etcd.rs).
command -v etcd >/dev/null 2>&1 || need_pkgs+=(etcd-server)
# protoc: the etcd-client crate compiles etcd's protobuf definitions at build time.
command -v protoc >/dev/null 2>&1 || need_pkgs+=(protobuf-compiler)
# dig, for the DNS interface's end-to-end test (crates/signpost/tests/e2e/dig.rs).
command -v dig >/dev/null 2>&1 || need_pkgs+=(dnsutils)
# curl, for the TLS end-to-end test (crates/signpost/tests/e2e/tls.rs).
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
# Headless Chromium and its WebDriver, for the web UI's browser tests (crates/signpost/tests/e2e/ui.rs).
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_pkgs+=(chromium-driver)
# pip, for py-consul below.
python3 -m pip --version >/dev/null 2>&1 || need_pkgs+=(python3-pip)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need_pkgs[@]}"
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq "${need_pkgs[@]}"
  fi
fi

# Real Consul clients for crates/signpost/tests/e2e/consul_clients.rs, installed only when missing.
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
# py-consul (PyPI), pinned, into the python3 the test runs.
py_consul_version=1.8.0
if ! python3 -c 'import importlib.metadata as m, sys; sys.exit(m.version("py-consul") != sys.argv[1])' \
  "$py_consul_version" 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
    "py-consul==$py_consul_version"
fi
# victoria-metrics: its single-node binary scrapes with Prometheus's configuration, consul_sd_configs
# included, and answers Prometheus's /api/v1/targets. Debian's `prometheus` is built without Consul
# service discovery (bookworm, trixie and sid alike), so it cannot serve this test. Only Debian 13
# (trixie) packages victoria-metrics: its .deb is fetched with apt from the Debian mirror this
# machine already uses, through a private source list (this machine's sources stay as they are),
# and only the binary is taken out of it. It needs nothing beyond libc and libzstd.
if ! command -v victoria-metrics >/dev/null 2>&1; then
  mirror=$({
    sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n'
    grep -hs '^deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
      sed 's/\[[^]]*\]//' | awk '{print $2}'
  } | grep -m1 -E '/debian/?$' || true)
  if [ -z "$mirror" ]; then
    echo "test.sh: no Debian mirror in this machine's apt sources to fetch victoria-metrics from" >&2
    exit 1
  fi
  vm_tmp=$(mktemp -d)
  chmod 755 "$vm_tmp"
  mkdir -p "$vm_tmp/lists/partial" "$vm_tmp/cache/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${mirror%/} trixie main" \
    >"$vm_tmp/sources.list"
  apt_vm=(-o "Dir::Etc::SourceList=$vm_tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$vm_tmp/lists" -o "Dir::Cache=$vm_tmp/cache")
  as_root apt-get "${apt_vm[@]}" update -qq
  (cd "$vm_tmp" && as_root apt-get "${apt_vm[@]}" download -qq victoria-metrics)
  dpkg-deb -x "$vm_tmp"/victoria-metrics_*.deb "$vm_tmp/root"
  as_root install -m 755 "$vm_tmp/root/usr/bin/victoria-metrics" /usr/local/bin/victoria-metrics
  as_root rm -rf "$vm_tmp"
fi

rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
