#!/usr/bin/env bash
# The cost of presence in a big room: 10,000 members held in one room over
# two edges, every one joined with `presence: true` (the list, then every
# change: the most a room can cost), while other users come into it and go again at stepped rates
# (`sbbench churn`: connect, join, stay 1 s, disconnect). For each rate, over
# the churn window: the CPU of the edges, the router and the broker, the
# `presence` frames the edges queued to members and the presence records
# they wrote, next to what one frame per change would have cost. Real Kafka
# and PostgreSQL from the project's scripts; release binaries.
#
#   bench/presence.sh                    churn of 0, 10, 100 and 500 users/s, 20 s each
#   bench/presence.sh "0 50" 10          other rates, 10 s each
#   SB_BENCH_MEMBERS=2000 bench/presence.sh
set -euo pipefail
source "$(dirname "$0")/services.sh"
RATES="${1:-0 10 100 500}"
SECONDS_EACH="${2:-20}"
MEMBERS="${SB_BENCH_MEMBERS:-10000}"

export SB_TOPIC_PREFIX="presencebench$STAMP"
export SB_JWT_SECRET="presence-bench-secret-0123456789abcdef"
LOGS="$ROOT/.work/presence-bench"
rm -rf "$LOGS" && mkdir -p "$LOGS"
database DB "presence_$STAMP"

"$BIN/sbctl" topics --partitions 12 --replication 1 >/dev/null
"$BIN/sbctl" migrate --database-url "$DB" >/dev/null
"$BIN/router" --ops-listen 127.0.0.1:0 >"$LOGS/router.log" 2>&1 &
ROUTER=$!
pids+=("$ROUTER")
EDGES=(127.0.0.1:28290 127.0.0.1:28291)
EDGE_PIDS=()
for i in 0 1; do
    "$BIN/edge" --node-id "bench-edge-$i" --listen "${EDGES[$i]}" --database-url "$DB" \
        >"$LOGS/edge-$i.log" 2>&1 &
    EDGE_PIDS+=($!)
    pids+=($!)
done
for edge in "${EDGES[@]}"; do wait_ready "$edge"; done
KAFKA="$(cat "$ROOT/.work/kafka/kafka.pid")"
TARGETS="$(IFS=,; echo "${EDGES[*]}")"

# The members: held until this script closes the pipe.
mkfifo "$LOGS/hold.in"
"$BIN/sbbench" hold --protocol switchboard --targets "$TARGETS" --connections "$MEMBERS" \
    --room-size "$MEMBERS" --presence <"$LOGS/hold.in" >"$LOGS/hold.log" 2>&1 &
pids+=($!)
exec 3>"$LOGS/hold.in"
for _ in $(seq 600); do grep -q '^connected' "$LOGS/hold.log" && break; sleep 0.5; done
echo "members: $(cat "$LOGS/hold.log") (connected, failed) in room-0 over ${#EDGES[@]} edges"
# Let the members' own joins settle (their presence frames are not counted).
sleep 5

printf '%-10s %-11s %-11s %-11s %-13s %-14s %-13s %s\n' "churn/s" "edges cores" "router" "broker" \
    "frames/s" "per member/s" "records/s" "one frame per change would be"
for rate in $RATES; do
    e0="$(cpu_seconds "${EDGE_PIDS[@]}")"; r0="$(cpu_seconds "$ROUTER")"; k0="$(cpu_seconds "$KAFKA")"
    f0="$(metric switchboard_edge_presence_frames_total "${EDGES[@]}")"
    p0="$(metric 'switchboard_edge_presence_records_total{outcome="ok"}' "${EDGES[@]}")"
    began="$(date +%s.%N)"
    if [ "$rate" = 0 ]; then
        sleep "$SECONDS_EACH"
        churned="no churn"
    else
        churned="$("$BIN/sbbench" churn --targets "$TARGETS" --rate "$rate" --duration "${SECONDS_EACH}s" \
            --stay 1s 2>>"$LOGS/churn.log")"
    fi
    ended="$(date +%s.%N)"
    e1="$(cpu_seconds "${EDGE_PIDS[@]}")"; r1="$(cpu_seconds "$ROUTER")"; k1="$(cpu_seconds "$KAFKA")"
    f1="$(metric switchboard_edge_presence_frames_total "${EDGES[@]}")"
    p1="$(metric 'switchboard_edge_presence_records_total{outcome="ok"}' "${EDGES[@]}")"
    awk -v rate="$rate" -v a="$began" -v b="$ended" -v e0="$e0" -v e1="$e1" -v r0="$r0" -v r1="$r1" \
        -v k0="$k0" -v k1="$k1" -v f0="$f0" -v f1="$f1" -v p0="$p0" -v p1="$p1" -v members="$MEMBERS" '
        BEGIN {
            t = b - a
            printf "%-10s %-11.2f %-11.2f %-11.2f %-13.0f %-14.2f %-13.1f %.0f\n", rate, (e1 - e0) / t,
                (r1 - r0) / t, (k1 - k0) / t, (f1 - f0) / t, (f1 - f0) / t / members, (p1 - p0) / t,
                2 * rate * members
        }'
    echo "           ($churned)"
done
exec 3>&-
