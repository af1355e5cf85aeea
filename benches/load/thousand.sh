#!/usr/bin/env bash
# 1,000 concurrent clients for a minute against a data dir of 10,000 pages and 50,000 files
# (issue 10). Builds Larder in release mode, then runs benches/thousand.rs, which generates the
# data dir, starts its own slow upstream and the release larder, and prints the table.
# Knobs: DURATION (60), CONNS (1000).
set -euo pipefail
cd "$(dirname "$0")/../.."
ulimit -n "$(ulimit -Hn)"
cargo build --release --quiet --bin larder
exec cargo bench --quiet --bench thousand
