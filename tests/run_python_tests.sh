#!/usr/bin/env bash
# Runs the Python-driven tests: the web client in headless Chromium
# (tests/browser) and the example clients, Python and JavaScript
# (tests/examples), each against a real node started by the tests.
#
# Uses a virtualenv in target/py-venv with tests/requirements.txt, and the
# debug binary target/debug/swiftchat (built here when needed; honours
# CARGO_TARGET_DIR).
# Needs: python3 (3.10+, with venv), chromium and chromedriver (Debian:
# apt-get install -y chromium chromium-driver), node >= 20 for the JS example.
# Extra arguments go to pytest, e.g. `-k js` or `-x`.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "run_python_tests.sh: $*" >&2; exit 1; }

command -v python3 >/dev/null 2>&1 || fail "python3 not found (apt-get install -y python3 python3-venv)"
missing=()
command -v "${CHROMIUM:-chromium}" >/dev/null 2>&1 || [ -x "${CHROMIUM:-/usr/bin/chromium}" ] || missing+=(chromium)
command -v "${CHROMEDRIVER:-chromedriver}" >/dev/null 2>&1 || [ -x "${CHROMEDRIVER:-/usr/bin/chromedriver}" ] || missing+=(chromedriver)
if [ ${#missing[@]} -gt 0 ]; then
  fail "${missing[*]} not found: the browser test needs Debian's Chromium and its driver: apt-get install -y chromium chromium-driver"
fi
if ! command -v node >/dev/null 2>&1; then
  echo "run_python_tests.sh: node not found: the JavaScript example tests will be SKIPPED (they need Node >= 20)" >&2
fi

venv=target/py-venv
stamp="$venv/.requirements.sha256"
want=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== Python virtualenv: $venv"
  mkdir -p target
  python3 -m venv "$venv" || fail "cannot create a virtualenv (apt-get install -y python3-venv)"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
  echo "$want" > "$stamp"
fi

echo "== Building target/debug/swiftchat"
cargo build --locked --bin swiftchat

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
# Not SWIFTCHAT_*: the node reads every such variable as configuration.
export TEST_SWIFTCHAT_BIN="$target_dir/debug/swiftchat"
export PYTHONDONTWRITEBYTECODE=1
export SE_OFFLINE=true   # Selenium must use /usr/bin/chromedriver, never download one
echo "== pytest tests/browser tests/examples"
exec "$venv/bin/python" -m pytest -p no:cacheprovider -rs -v tests/browser tests/examples "$@"
