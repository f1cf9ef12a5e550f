#!/usr/bin/env bash
# The whole benchmark in one command: installs the baseline's dependencies,
# builds the release binaries, then runs every scenario against the bare
# ceiling, Socket.IO + Redis and Switchboard, one after the other, and writes
# bench/results/summary.md and results.json.
#
#   bench/run.sh                 the full plan
#   bench/run.sh --quick         a small plan to check the setup
#   bench/run.sh --systems switchboard
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
bench/setup.sh
cargo build --release -p switchboard -p switchboard-bench
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
exec "$TARGET/release/sbbench" all --bin-dir "$TARGET/release" "$@"
