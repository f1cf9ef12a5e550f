#!/usr/bin/env bash
# The whole benchmark in one command: installs the baseline's dependencies,
# builds the release binaries, then runs every scenario against the bare
# ceiling, Socket.IO + Redis, Switchboard's embedded default and Switchboard
# on Kafka + PostgreSQL, one after the other, and writes
# bench/results/summary.md and results.json.
#
#   bench/run.sh                 the full plan
#   bench/run.sh --quick         a small plan to check the setup
#   bench/run.sh --systems switchboard
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
bench/setup.sh
# The real setup: Kafka and PostgreSQL from the project's scripts, stopped
# again at the end if this run started them.
started=()
cleanup() { for service in "${started[@]}"; do "scripts/$service.sh" stop || true; done; }
trap cleanup EXIT
scripts/kafka.sh status >/dev/null 2>&1 || started+=(kafka)
scripts/postgres.sh status >/dev/null 2>&1 || started+=(postgres)
scripts/kafka.sh start
scripts/postgres.sh start
cargo build --release -p switchboard -p switchboard-bench -p switchboard-edge -p switchboard-workers \
    -p switchboard-admin --bins
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
"$TARGET/release/sbbench" all --bin-dir "$TARGET/release" "$@"
