#!/usr/bin/env bash
# One-command load benchmark: Larder against nginx serving the same bytes, on loopback.
# Installs what it needs (nginx, wrk from Debian; pip and uv into .venv-e2e), builds Larder in
# release mode, then runs benches/load/run.py. Not part of CI: it is the tool that proves the
# performance targets. Knobs: ROUNDS (3), DURATION (8s), CONNS (32), SKIP_HUGE=1, SKIP_CLIENTS=1,
# ONLY=<substring of a row label>, UPSTREAM_DELAY_MS=<ms of latency the upstream adds for the client rows>.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
    echo "==> installing nginx and wrk"
    if [ "$(id -u)" = 0 ]; then apt-get install -y -q nginx-light wrk >/dev/null; else sudo apt-get install -y -q nginx-light wrk >/dev/null; fi
fi
VENV="${LARDER_E2E_VENV:-$PWD/.venv-e2e}"
if [ ! -x "$VENV/bin/uv" ]; then
    echo "==> installing pip and uv into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
fi
echo "==> cargo build --release"
cargo build --release --quiet
exec python3 benches/load/run.py --venv "$VENV" --larder target/release/larder "$@"
