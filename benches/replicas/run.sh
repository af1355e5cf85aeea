#!/usr/bin/env bash
# Replicas on one S3 bucket (issue 13), on loopback: warm hits vs nginx, a blob from the bucket,
# upload-to-visible latency across replicas, two replicas behind a balancer vs one.
# Installs nginx and wrk (Debian) when missing; uses SeaweedFS's `weed` and pip from .venv-e2e
# (scripts/test installs them); builds Larder in release mode. Knobs: ROUNDS (3), DURATION (5s),
# CONNS (32), UPLOADS (100).
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/lib.sh
need_nginx_and_wrk
need_venv weed
release_build
exec python3 benches/replicas/run.py --venv "$VENV" --larder target/release/larder "$@"
