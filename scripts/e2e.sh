#!/usr/bin/env bash
# The end-to-end and fault suite against real Kafka and PostgreSQL:
# starts both (installing what is missing), builds the release binaries,
# runs tests/real_cluster.rs one test at a time, and stops the services it
# started, also when a test fails.
#
#   scripts/e2e.sh                 every case
#   scripts/e2e.sh kafka_broker    only the cases whose name contains this
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

source "$ROOT/scripts/phase.sh"

BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/release"
started=()
cleanup() {
    # Processes of a test run that was killed before it could stop them.
    pkill -KILL -f "^$BIN_DIR/(edge|persister|router|notifier) " || true
    pkill -KILL -f "otelcol-sb --config=file:$ROOT/.work/otelcol/" || true
    for service in "${started[@]}"; do "scripts/$service.sh" stop || true; done
}
trap cleanup EXIT

scripts/kafka.sh status >/dev/null 2>&1 || started+=(kafka)
scripts/postgres.sh status >/dev/null 2>&1 || started+=(postgres)
phase "kafka" scripts/kafka.sh start
phase "postgres" scripts/postgres.sh start
# Forget the previous run's logs and databases (each test makes its own).
rm -rf .work/e2e
scripts/postgres.sh drop-test-databases
# The trace test's OpenTelemetry Collector: built once from the Go module
# proxy (a few minutes), then cached in ~/.cache/switchboard.
phase "opentelemetry collector" scripts/otelcol.sh build
phase "release build" cargo build --release -p switchboard-edge -p switchboard-workers -p switchboard-admin --bins

export SB_E2E_KAFKA=127.0.0.1:${SB_KAFKA_PORT:-19092}
export SB_E2E_KAFKA_SECURE=localhost:${SB_KAFKA_SECURE_PORT:-19094}
export SB_E2E_POSTGRES_URL="$(scripts/postgres.sh url)"
export SB_E2E_BIN_DIR="$BIN_DIR"
# The PostgreSQL variants of the store tests, then the multi-process suite.
phase "store tests on postgres" env SB_TEST_POSTGRES_URL="$SB_E2E_POSTGRES_URL" \
    cargo test -p switchboard-core --lib -- --ignored
# Bounded: each case has its own deadlines, and the whole suite gets 20 minutes.
phase "end-to-end suite" timeout --kill-after=30s 20m \
    cargo test --test real_cluster --test recovery -- --ignored --test-threads=1 "$@"
# The protocol conformance suite against two edges, a persister and a router
# on the same services (only in a full run: a filter names Rust cases).
if [ $# -eq 0 ]; then
    phase "conformance (real cluster)" env CARGO_TARGET_DIR="${BIN_DIR%/release}" SB_CONFORMANCE_NO_BUILD=1 \
        tests/conformance/run.sh cluster
fi
