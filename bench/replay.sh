#!/usr/bin/env bash
# Replay rate of `sbctl replay store` into PostgreSQL, next to the raw read
# rate of the same topic range (`--count-only`) and the live persister
# draining the same backlog. Real Kafka and PostgreSQL from the project's
# scripts; release binaries.
#
#   bench/replay.sh                  4,000 msg/s for 30 s (120,000 records)
#   bench/replay.sh RATE SECONDS
#   SB_BENCH_BASELINE_SBCTL=/path/to/older/sbctl bench/replay.sh
#                                    also replays the same backlog with another
#                                    build, for before/after figures of one run
#
# The backlog is made by clients sending through an edge while no persister
# runs (rooms of 10, 128-byte bodies, the benchmark driver's load); then,
# one after the other: the read alone, the replay into an empty database,
# the same rows inserted by the database alone (INSERT ... SELECT, no
# client: the floor under any replay into this database), and a persister
# started on another empty database, timed until it has stored every record.
set -euo pipefail
source "$(dirname "$0")/services.sh"
RATE="${1:-4000}"
SECONDS_OF_LOAD="${2:-30}"

export SB_TOPIC_PREFIX="replaybench$STAMP"
export SB_JWT_SECRET="replay-bench-secret-0123456789abcdef"
LOGS="$ROOT/.work/replay-bench"
mkdir -p "$LOGS"
database LIVE_DB "replay_live_$STAMP"
database REPLAY_DB "replay_store_$STAMP"

"$BIN/sbctl" topics --partitions 12 --replication 1 >/dev/null
"$BIN/sbctl" migrate --database-url "$LIVE_DB" >/dev/null
"$BIN/router" --ops-listen 127.0.0.1:0 >"$LOGS/router.log" 2>&1 &
pids+=($!)
"$BIN/edge" --node-id bench-edge --listen 127.0.0.1:28190 --database-url "$LIVE_DB" \
    --rate-per-second 1000 --rate-burst 1000 >"$LOGS/edge.log" 2>&1 &
pids+=($!)
wait_ready 127.0.0.1:28190

echo "backlog: $RATE msg/s for ${SECONDS_OF_LOAD}s into $SB_TOPIC_PREFIX.inbound (no persister running)"
"$BIN/sbbench" drive --protocol switchboard --targets 127.0.0.1:28190 --connections 1000 --room-size 10 \
    --rate "$RATE" --warmup 1s --duration "${SECONDS_OF_LOAD}s" >"$LOGS/drive.log" 2>&1 || true
tail -3 "$LOGS/drive.log"

echo "--- the topic read alone (sbctl replay store --count-only)"
"$BIN/sbctl" replay store --from-beginning --execute --count-only --database-url "$REPLAY_DB" \
    --group "$SB_TOPIC_PREFIX-count" | tail -1
echo "--- replay into an empty database (sbctl replay store --execute)"
"$BIN/sbctl" replay store --from-beginning --execute --database-url "$REPLAY_DB" | tail -1

if [ -n "${SB_BENCH_BASELINE_SBCTL:-}" ]; then
    echo "--- the same replay with $SB_BENCH_BASELINE_SBCTL, into another empty database"
    database BASELINE_DB "replay_baseline_$STAMP"
    "$SB_BENCH_BASELINE_SBCTL" replay store --from-beginning --execute --database-url "$BASELINE_DB" \
        --group "$SB_TOPIC_PREFIX-baseline" 2>/dev/null | tail -1
fi

TOTAL="$("$PSQL" "$REPLAY_DB" -X -tAc "SELECT count(*) FROM messages")"
echo "--- the database alone: the replayed rows copied into an empty table with the same indexes (no client)"
"$PSQL" "$REPLAY_DB" -X -q -c "CREATE TABLE floor_copy (LIKE messages INCLUDING ALL)"
began="$(date +%s.%N)"
"$PSQL" "$REPLAY_DB" -X -q -c "INSERT INTO floor_copy SELECT * FROM messages"
ended="$(date +%s.%N)"
awk -v n="$TOTAL" -v a="$began" -v b="$ended" \
    'BEGIN { printf "the database inserted %d rows in %.1f s (%.0f rows/s): no replay into it can be faster\n", n, b - a, n / (b - a) }'
"$PSQL" "$REPLAY_DB" -X -q -c "DROP TABLE floor_copy"

echo "--- the live persister draining the same backlog into another empty database"
OPS=127.0.0.1:28191
began="$(date +%s.%N)"
"$BIN/persister" --database-url "$LIVE_DB" --migrate=false --ops-listen "$OPS" >"$LOGS/persister.log" 2>&1 &
pids+=($!)
while :; do
    [ "$(metric switchboard_persister_messages_stored_total "$OPS")" -ge "$TOTAL" ] && break
    sleep 0.1
done
ended="$(date +%s.%N)"
awk -v n="$TOTAL" -v a="$began" -v b="$ended" \
    'BEGIN { printf "persister stored %d messages in %.1f s from its start (%.0f messages/s)\n", n, b - a, n / (b - a) }'
