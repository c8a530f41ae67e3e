#!/usr/bin/env bash
# The one test command (README: "Test it"). CI runs exactly this via .ci/run.
# Installs what the tests need, then: formatting, lints, the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests need. None yet beyond the Rust toolchain; later suites (etcd,
# nginx) add theirs here, installed only when missing.
need_pkgs=()
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need_pkgs[@]}"
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq "${need_pkgs[@]}"
  fi
fi

rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
