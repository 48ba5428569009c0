#!/usr/bin/env bash
# The whole test suite: what README.md tells a new user to run, and what
# .ci/run calls. Needs redis-server on PATH (the tests start their own on a
# free port); the browser tests need chromium and chromium-driver; the
# deployment test runs only where a Docker engine answers.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server not found on PATH: install it with 'apt-get install -y redis-server'" >&2
  exit 1
fi

echo "== Rust tests (unit, protocol, cluster, terminal client)"
cargo test --workspace --locked 2>&1

if [ -f tests/run_python_tests.sh ]; then
  echo "== Web client and example clients (headless Chromium, Python, Node)"
  bash tests/run_python_tests.sh
fi

if [ -f deploy/e2e.sh ]; then
  if docker info >/dev/null 2>&1 && [ "${SKIP_DOCKER_E2E:-0}" != 1 ]; then
    echo "== Deployment: docker compose cluster behind the load balancer"
    bash deploy/e2e.sh
  else
    echo "== Deployment end-to-end test SKIPPED: no Docker engine answers (docker info failed)"
  fi
fi
