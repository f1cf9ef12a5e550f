#!/usr/bin/env bash
# The client-side protocol conformance suite (schemas/PROTOCOL.md) against
# servers this script starts, and stops again whatever happens.
#
#   tests/conformance/run.sh embedded   the embedded default binary (mock Kafka, SQLite), the default
#   tests/conformance/run.sh cluster    edge x2, persister, router on the real Kafka and PostgreSQL
#                                       that scripts/kafka.sh and scripts/postgres.sh started
#
# Extra arguments go to pytest (e.g. -k resume; a filtered run fails the
# coverage check in test_98). Environment:
#   CARGO_TARGET_DIR                 build cache (default ~/.cache/switchboard/target)
#   SB_CONFORMANCE_NO_BUILD=1        use the binaries already built
#   SB_CONFORMANCE_TIME_LIMIT        seconds for everything after the build (default 600)
#   SB_CONFORMANCE_BUILD_TIME_LIMIT  seconds for the build (default 3600; a first build takes many minutes)
#   SB_CONFORMANCE_VENV              the suite's virtualenv (default ~/.cache/switchboard/conformance-venv)
#   SB_KAFKA_PORT, SB_POSTGRES_PORT  as in scripts/kafka.sh and scripts/postgres.sh (cluster)
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

TARGET="${1:-embedded}"
case "$TARGET" in
    embedded | cluster) ;;
    *) echo "usage: $0 [embedded|cluster] [pytest args...]" >&2; exit 64 ;;
esac
shift $(($# > 0 ? 1 : 0))

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/switchboard/target}"
BIN_DIR="$CARGO_TARGET_DIR/release"
VENV="${SB_CONFORMANCE_VENV:-$HOME/.cache/switchboard/conformance-venv}"
TIME_LIMIT="${SB_CONFORMANCE_TIME_LIMIT:-600}"
ALLOWED_ORIGIN="https://conformance.example"
export PYTHONDONTWRITEBYTECODE=1 NO_COLOR=1

source "$ROOT/scripts/phase.sh"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/sb-conformance.XXXXXX")"
pids=()   # every process started here, stopped by cleanup
names=()
child_pid=""   # the `bounded` step running now
database=""
admin_url=""
prefix=""
kafka=""
failed=1

stop_processes() {
    local i
    if [ -n "$child_pid" ] && kill -0 "$child_pid" 2>/dev/null; then
        kill -TERM "$child_pid" 2>/dev/null || true   # `timeout` passes it on
        wait "$child_pid" 2>/dev/null || true
    fi
    for i in "${!pids[@]}"; do
        kill -TERM "${pids[$i]}" 2>/dev/null || true
    done
    for i in "${!pids[@]}"; do
        for _ in $(seq 1 150); do
            kill -0 "${pids[$i]}" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "${pids[$i]}" 2>/dev/null; then
            echo "${names[$i]} (pid ${pids[$i]}) did not stop within 15 s of SIGTERM; killing it" >&2
            kill -KILL "${pids[$i]}" 2>/dev/null || true
        fi
        wait "${pids[$i]}" 2>/dev/null || true
    done
    pids=()  # stopped and reaped: never signal these ids again
    names=()
}

remove_cluster_state() {
    if [ -n "$prefix" ] && [ -n "$kafka" ]; then
        echo "deleting topics $prefix.*"
        delete_topics || echo "could not delete the topics $prefix.* (see above)" >&2
    fi
    if [ -n "$database" ]; then
        echo "dropping database $database"
        timeout 60 psql "$admin_url" -X -q -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" ||
            echo "could not drop database $database" >&2
    fi
}

cleanup() {
    local status=$?
    set +e
    trap - INT TERM
    stop_processes
    [ "$TARGET" = cluster ] && remove_cluster_state
    if [ "$failed" != 0 ]; then
        for log in "$WORK"/*.log; do
            [ -f "$log" ] || continue
            echo "----- $(basename "$log"): last 40 lines"
            tail -n 40 "$log"
        done
        local keep="${SB_WORK_DIR:-$ROOT/.work}/conformance/$TARGET"
        rm -rf "$keep" && mkdir -p "$keep" && cp "$WORK"/*.log "$keep"/ 2>/dev/null &&
            echo "process logs kept in $keep"
        [ "$status" = 0 ] && status=1
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

remaining() {
    local left=$((DEADLINE - SECONDS))
    if [ "$left" -le 0 ]; then
        echo "time limit of ${TIME_LIMIT}s reached" >&2
        exit 124
    fi
    echo "$left"
}

# Runs a step under `timeout`, in the background so that INT/TERM reach the
# trap at once (bash defers traps while a foreground command runs).
bounded() {
    local seconds=$1
    shift
    local rc=0
    timeout --kill-after=15s "$seconds" "$@" &
    child_pid=$!
    wait "$child_pid" || rc=$?
    child_pid=""
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        echo "timed out after ${seconds}s: $*" >&2
    fi
    return "$rc"
}

# Starts a server process in the background with its output in $WORK/<name>.log.
start() {
    local name=$1
    shift
    RUST_LOG="${RUST_LOG:-info}" "$@" > "$WORK/$name.log" 2>&1 < /dev/null &
    pids+=($!)
    names+=("$name")
}

setup_venv() {
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
        echo "python3 must be 3.11 or newer" >&2
        exit 1
    }
    local want
    want="$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1) $(python3 -c 'import sys; print(sys.version.split()[0])')"
    if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.requirements-hash" 2>/dev/null)" = "$want" ]; then
        echo "venv $VENV is up to date"
        return
    fi
    echo "creating $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$HERE/requirements.txt"
    echo "$want" > "$VENV/.requirements-hash"
}

build() {
    if [ "${SB_CONFORMANCE_NO_BUILD:-}" = 1 ]; then
        echo "SB_CONFORMANCE_NO_BUILD=1: using the binaries in $BIN_DIR"
        return
    fi
    # The first build takes many minutes on a small machine; later ones are no-ops.
    local limit="${SB_CONFORMANCE_BUILD_TIME_LIMIT:-3600}"
    if [ "$TARGET" = embedded ]; then
        bounded "$limit" cargo build --release --bin switchboard
    else
        bounded "$limit" cargo build --release -p switchboard-edge -p switchboard-workers -p switchboard-admin --bins
    fi
}

tools() {
    python3 "$HERE/tools.py" "$@"
}

start_embedded() {
    local port secret
    port="$(tools free-port-pair)"
    secret="$(tools hex 24)"
    start switchboard "$BIN_DIR/switchboard" --jwt-secret "$secret" --host 127.0.0.1 --port "$port" \
        --db "$WORK/chat.db" --allowed-origins "$ALLOWED_ORIGIN"
    tools wait-http --pid "${pids[0]}" --path /healthz --timeout "$(remaining)" \
        "127.0.0.1:$port" "127.0.0.1:$((port + 1))"
    export SB_CONFORMANCE_EDGES="127.0.0.1:$port,127.0.0.1:$((port + 1))"
    export SB_CONFORMANCE_SECRET="$secret"
    export SB_CONFORMANCE_PID="${pids[0]}"
    export SB_CONFORMANCE_SQLITE="$WORK/chat.db"
    echo "embedded default (pid ${pids[0]}) on $SB_CONFORMANCE_EDGES"
}

# The run's topics, by `sbctl delete-topics`. The workers have stopped, but
# as static members they stay listed in their groups for 30 s.
delete_topics() {
    timeout 90 "$BIN_DIR/sbctl" delete-topics "--kafka-brokers=$kafka" "--topic-prefix=$prefix" --execute \
        --ignore-members | tail -1
}

start_cluster() {
    kafka="127.0.0.1:${SB_KAFKA_PORT:-19092}"
    admin_url="${SB_CONFORMANCE_POSTGRES_URL:-$(scripts/postgres.sh url)}"
    if ! (exec 3<> "/dev/tcp/${kafka%:*}/${kafka##*:}") 2> /dev/null; then
        echo "no Kafka broker on $kafka: run scripts/kafka.sh start first" >&2
        kafka=""
        exit 1
    fi
    if ! timeout 10 psql "$admin_url" -X -q -c "SELECT 1" > /dev/null; then
        echo "PostgreSQL at $admin_url does not answer: run scripts/postgres.sh start first" >&2
        exit 1
    fi
    local run secret
    run="$(tools hex 4)"
    secret="$(tools hex 24)"
    prefix="conf$run"
    timeout 60 psql "$admin_url" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE conf_$run"
    database="conf_$run"
    local database_url="${admin_url%/*}/$database"
    local kafka_flags=("--kafka-brokers=$kafka" "--topic-prefix=$prefix")
    bounded "$(remaining)" "$BIN_DIR/sbctl" topics "${kafka_flags[@]}" --partitions=4 --replication=1
    bounded "$(remaining)" "$BIN_DIR/sbctl" migrate "--database-url=$database_url"

    start persister "$BIN_DIR/persister" "${kafka_flags[@]}" "--database-url=$database_url" --migrate=false \
        "--persister-instance-id=$prefix-persister"
    start router "$BIN_DIR/router" "${kafka_flags[@]}" "--router-instance-id=$prefix-router"
    local edges=() edge_pids=() i port
    for i in 1 2; do
        port="$(tools free-port)"
        start "edge-$i" "$BIN_DIR/edge" "${kafka_flags[@]}" "--database-url=$database_url" \
            "--node-id=$prefix-edge-$i" "--listen=127.0.0.1:$port" "--jwt-secret=$secret" \
            "--allowed-origins=$ALLOWED_ORIGIN" --heartbeat-interval=1s --drain-grace=2s
        edges+=("127.0.0.1:$port")
        edge_pids+=("${pids[-1]}")
    done
    for i in 0 1; do
        tools wait-http --pid "${edge_pids[$i]}" --path /readyz --timeout "$(remaining)" "${edges[$i]}"
    done
    for i in "${!pids[@]}"; do
        kill -0 "${pids[$i]}" 2> /dev/null || { echo "${names[$i]} exited during start" >&2; exit 1; }
    done
    export SB_CONFORMANCE_EDGES="${edges[0]},${edges[1]}"
    export SB_CONFORMANCE_SECRET="$secret"
    export SB_CONFORMANCE_PID="${edge_pids[0]},${edge_pids[1]}"
    export SB_CONFORMANCE_DATABASE_URL="$database_url"
    echo "cluster: topic prefix $prefix, database $database, edges $SB_CONFORMANCE_EDGES"
}

run_suite() {
    export SB_CONFORMANCE_TARGET="$TARGET" SB_CONFORMANCE_ALLOWED_ORIGIN="$ALLOWED_ORIGIN"
    local rc=0
    bounded "$(remaining)" "$VENV/bin/python" -m pytest -c "$HERE/pytest.ini" --rootdir "$HERE" -v "$HERE" "$@" ||
        rc=$?
    case "$rc" in
        0) ;;
        5) echo "pytest collected no tests: that is a failure here" >&2; return 1 ;;
        124 | 137) echo "the suite did not finish within the time limit" >&2; return 1 ;;
        *) return "$rc" ;;
    esac
}

total_start=$SECONDS
phase "conformance venv" setup_venv
phase "release build" build
DEADLINE=$((SECONDS + TIME_LIMIT))
phase "start $TARGET" "start_$TARGET"
phase "conformance suite ($TARGET)" run_suite "$@"
failed=0
phase "stop" stop_processes
echo "::: conformance ($TARGET) passed in $((SECONDS - total_start))s"
