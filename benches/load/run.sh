#!/usr/bin/env bash
# One-command load benchmark: Larder against nginx serving the same bytes, on loopback.
# Installs what it needs (nginx, wrk from Debian; pip and uv into .venv-e2e), builds Larder in
# release mode, then runs benches/load/run.py. Not part of CI: it is the tool that proves the
# performance targets. Knobs: ROUNDS (3), DURATION (8s), CONNS (32), SKIP_HUGE=1, SKIP_CLIENTS=1,
# ONLY=<substring of a row label>, UPSTREAM_DELAY_MS=<ms of latency the upstream adds for the client rows>.
set -euo pipefail
cd "$(dirname "$0")/../.."

. benches/lib.sh
need_nginx_and_wrk
need_venv uv
release_build
exec python3 benches/load/run.py --venv "$VENV" --larder target/release/larder "$@"
