# Sourced by the bench scripts that run the release binaries on the
# project's Kafka and PostgreSQL (bench/replay.sh, bench/hops.sh): starts
# both, builds the binaries, and at exit, also on failure, kills the
# processes listed in `pids`, deletes the run's topics (SB_TOPIC_PREFIX),
# drops the databases made with `database`, and stops the services it
# started. Sets ROOT, BIN, PSQL, URL and STAMP; defines `database`,
# `workers`, `cpu_seconds`, `metric` and `wait_ready`.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
pids=()
databases=()
started=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ -n "${SB_TOPIC_PREFIX:-}" ]; then
        # The workers were just killed; as static members they stay listed.
        "$BIN/sbctl" delete-topics --execute --ignore-members >/dev/null || true
    fi
    for name in "${databases[@]}"; do
        "$PSQL" "$URL" -X -q -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" || true
    done
    for service in "${started[@]}"; do "scripts/$service.sh" stop || true; done
}
trap cleanup EXIT
scripts/kafka.sh status >/dev/null 2>&1 || started+=(kafka)
scripts/postgres.sh status >/dev/null 2>&1 || started+=(postgres)
scripts/kafka.sh start >/dev/null
scripts/postgres.sh start >/dev/null
cargo build --release -p switchboard-bench -p switchboard-edge -p switchboard-workers -p switchboard-admin --bins
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
PSQL="$(ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | head -1)"
PSQL="${PSQL:-psql}"
URL="$(scripts/postgres.sh url)"
STAMP="$(date +%s)"
export SB_KAFKA_BROKERS="127.0.0.1:${SB_KAFKA_PORT:-19092}"

# database VAR NAME: creates database NAME (dropped at exit) and sets VAR to its URL.
database() {
    "$PSQL" "$URL" -X -q -c "CREATE DATABASE $2" >/dev/null
    databases+=("$2")
    printf -v "$1" '%s' "${URL%/*}/$2"
}

# workers PARTITIONS DB LOGS [ROUTER_OPS]: creates the run's topics
# (SB_TOPIC_PREFIX) with PARTITIONS partitions and the schema in DB, starts
# a router and a persister logging to LOGS, and sets ROUTER and PERSISTER
# to their process ids (killed at exit with the rest of `pids`).
workers() {
    "$BIN/sbctl" topics --partitions "$1" --replication 1 >/dev/null
    "$BIN/sbctl" migrate --database-url "$2" >/dev/null
    "$BIN/router" --ops-listen "${4:-127.0.0.1:0}" >"$3/router.log" 2>&1 &
    ROUTER=$!
    "$BIN/persister" --database-url "$2" --migrate=false --ops-listen 127.0.0.1:0 >"$3/persister.log" 2>&1 &
    PERSISTER=$!
    pids+=("$ROUTER" "$PERSISTER")
}

# cpu_seconds PID...: the CPU time (user + system) the processes have used, in seconds.
cpu_seconds() {
    local ticks=0 pid
    for pid in "$@"; do
        ticks=$((ticks + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
    done
    awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'
}

# metric SERIES ADDR...: the sum of an integer series (as exported, labels
# included) over the /metrics of the listeners at ADDR...; 0 where absent.
metric() {
    local series="$1" total=0 addr value
    shift
    for addr in "$@"; do
        value="$(curl -fs "http://$addr/metrics" 2>/dev/null | awk -v m="$series" '$1 == m { print $2 }' || true)"
        total=$((total + ${value:-0}))
    done
    echo "$total"
}

# wait_ready ADDR: waits up to 20 s for the edge at ADDR to be ready.
wait_ready() {
    for _ in $(seq 100); do
        curl -fs "http://$1/readyz" >/dev/null && return
        sleep 0.2
    done
}
