#!/usr/bin/env bash
# Rolling restarts under load (issue 27): two replicas on one S3 bucket behind nginx, each
# SIGTERMed and started again twice while wrk, uploads and pip run through the balancer; then
# SIGTERM during a 1 GiB download from a single node. Exit 1 on any failed client request, lost
# upload or broken download. Knobs: RESTARTS (2), SKIP_HUGE=1, RATE (150M).
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/lib.sh
need_nginx_and_wrk
need_venv weed
release_build
exec python3 benches/replicas/rolling.py --venv "$VENV" --larder target/release/larder "$@"
