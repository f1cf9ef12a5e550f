#!/usr/bin/env bash
# Notifications per second the notifier sustains against a local receiver
# (`sbbench webhook`, which answers 200 at once). A backlog of messages is
# made first in private rooms of 10 clients and 5 members who never connect
# (the driver's load, no notifier running); then the notifier starts and is
# timed until the receiver has had a request for every message. Real Kafka
# and PostgreSQL from the project's scripts; release binaries.
#
#   bench/notifier.sh                2,000 msg/s for 20 s (40,000 messages)
#   bench/notifier.sh RATE SECONDS
set -euo pipefail
source "$(dirname "$0")/services.sh"
RATE="${1:-2000}"
SECONDS_OF_LOAD="${2:-20}"
CONNECTIONS=500
ROOM_SIZE=10

export SB_TOPIC_PREFIX="notifierbench$STAMP"
export SB_JWT_SECRET="notifier-bench-secret-0123456789abcdef"
LOGS="$ROOT/.work/notifier-bench"
rm -rf "$LOGS" && mkdir -p "$LOGS"
database DB "notifier_$STAMP"
export SB_DATABASE_URL="$DB"

"$BIN/sbctl" topics --partitions 12 --replication 1 >/dev/null
"$BIN/sbctl" migrate >/dev/null
PERSISTER_OPS=127.0.0.1:28391
"$BIN/persister" --migrate=false --ops-listen "$PERSISTER_OPS" >"$LOGS/persister.log" 2>&1 &
pids+=($!)
"$BIN/router" --ops-listen 127.0.0.1:0 >"$LOGS/router.log" 2>&1 &
pids+=($!)
EDGE=127.0.0.1:28390
"$BIN/edge" --node-id bench-edge --listen "$EDGE" --rate-per-second 1000 --rate-burst 1000 \
    >"$LOGS/edge.log" 2>&1 &
pids+=($!)
wait_ready "$EDGE"

# The driver's connection i is user u<i> in room-<i / 10>.
ROOMS=$((CONNECTIONS / ROOM_SIZE))
echo "creating $ROOMS private rooms of $ROOM_SIZE clients and 5 members away"
for room in $(seq 0 $((ROOMS - 1))); do
    members="$(seq -s, -f "u%.0f" $((room * ROOM_SIZE)) $((room * ROOM_SIZE + ROOM_SIZE - 1))),$(seq -s, -f "away-$room-%.0f" 1 5)"
    "$BIN/sbctl" rooms create "room-$room" --kind private --members "$members" >/dev/null
done

echo "backlog: $RATE msg/s for ${SECONDS_OF_LOAD}s (no notifier running)"
"$BIN/sbbench" drive --protocol switchboard --targets "$EDGE" --connections "$CONNECTIONS" --room-size "$ROOM_SIZE" \
    --rate "$RATE" --warmup 1s --duration "${SECONDS_OF_LOAD}s" >"$LOGS/drive.log" 2>&1 || true
tail -2 "$LOGS/drive.log"
# Every message stored (and so in sb.events) before the notifier starts.
stored() { metric switchboard_persister_messages_stored_total "$PERSISTER_OPS"; }
previous=-1
while [ "$(stored)" != "$previous" ]; do previous="$(stored)"; sleep 2; done
TOTAL="$(stored)"

RECEIVER=127.0.0.1:28392
"$BIN/sbbench" webhook --listen "$RECEIVER" >"$LOGS/webhook.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -fs "http://$RECEIVER/count" >/dev/null && break; sleep 0.1; done
began="$(date +%s.%N)"
"$BIN/notifier" --webhook-url "http://$RECEIVER/push" --webhook-secret "$SB_JWT_SECRET" \
    --recipient-rate-per-minute 1000000 --recipient-burst 1000000 --ops-listen 127.0.0.1:28393 \
    >"$LOGS/notifier.log" 2>&1 &
NOTIFIER=$!
pids+=("$NOTIFIER")
while :; do
    read -r requests recipients < <(curl -fs "http://$RECEIVER/count")
    [ "$requests" -ge "$TOTAL" ] && break
    if ! kill -0 "$NOTIFIER" 2>/dev/null; then echo "the notifier stopped:"; tail -5 "$LOGS/notifier.log"; exit 1; fi
    sleep 0.1
done
ended="$(date +%s.%N)"
cpu="$(cpu_seconds "$NOTIFIER")"
awk -v n="$requests" -v r="$recipients" -v a="$began" -v b="$ended" -v cpu="$cpu" \
    'BEGIN { t = b - a; printf "notifier: %d requests (%d recipients) in %.1f s from its start: %.0f requests/s, %.0f recipients/s, %.2f cores\n", n, r, t, n / t, r / t, cpu / t }'
