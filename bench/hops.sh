#!/usr/bin/env bash
# Where a message's milliseconds go, hop by hop, from its trace: an edge, a
# persister and a router on real Kafka and PostgreSQL export every span to a
# real OpenTelemetry Collector (scripts/otelcol.sh, file exporter) while the
# benchmark driver sends at a steady rate; bench/hops.py then lines each
# message's spans up (send on the edge, process and store on the persister,
# route on the router, deliver on the edge) and prints each hop's p50/p90,
# and the CPU each process spent.
#
#   bench/hops.sh              250 msg/s for 10 s, rooms of 10, 500 connections
#   bench/hops.sh RATE SECONDS
#
# Settings of the processes come from the environment as usual, e.g.
# SB_KAFKA_LINGER=0ms bench/hops.sh to see what the edge's linger costs.
set -euo pipefail
source "$(dirname "$0")/services.sh"
RATE="${1:-250}"
SECONDS_OF_LOAD="${2:-10}"
scripts/otelcol.sh build >/dev/null

WORK="$ROOT/.work/hops"
mkdir -p "$WORK"
SPANS="$WORK/spans-$STAMP.jsonl"
OTLP_PORT=24318
scripts/otelcol.sh run "$OTLP_PORT" "$SPANS" >"$WORK/otelcol.log" 2>&1 &
pids+=($!)
database DB "hops_$STAMP"
export SB_TOPIC_PREFIX="hops$STAMP"
export SB_JWT_SECRET="hops-bench-secret-0123456789abcdef"
export OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$OTLP_PORT"
export OTEL_BSP_SCHEDULE_DELAY=200

workers 12 "$DB" "$WORK"
router=$ROUTER
persister=$PERSISTER
"$BIN/edge" --node-id hops-edge --listen 127.0.0.1:28290 --database-url "$DB" >"$WORK/edge.log" 2>&1 &
edge=$!
pids+=("$edge")
wait_ready 127.0.0.1:28290
sleep 3

# CPU seconds (user + system) of a process so far.
before=("$(cpu_seconds "$edge")" "$(cpu_seconds "$persister")" "$(cpu_seconds "$router")")
echo "driving $RATE msg/s for ${SECONDS_OF_LOAD}s (rooms of 10, 500 connections); spans in $SPANS"
"$BIN/sbbench" drive --protocol switchboard --targets 127.0.0.1:28290 --connections 500 --room-size 10 \
    --rate "$RATE" --warmup 3s --duration "${SECONDS_OF_LOAD}s" --pids "$edge,$persister,$router" \
    >"$WORK/drive.json" 2>"$WORK/drive.log" || true
after=("$(cpu_seconds "$edge")" "$(cpu_seconds "$persister")" "$(cpu_seconds "$router")")
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("driver: p50 %.1f ms, p99 %.1f ms, %d deliveries/s, the three processes %.2f cores" % (d["p50_ms"], d["p99_ms"], d["deliveries_per_sec"], d["server_cpu_cores"]))' "$WORK/drive.json"
awk -v e0="${before[0]}" -v e1="${after[0]}" -v p0="${before[1]}" -v p1="${after[1]}" -v r0="${before[2]}" -v r1="${after[2]}" \
    'BEGIN { printf "CPU seconds over the drive (warm-up included): edge %.2f, persister %.2f, router %.2f\n", e1 - e0, p1 - p0, r1 - r0 }'
sleep 2  # the last spans' export
kill "$router" "$persister" "$edge"
wait "$router" "$persister" "$edge" 2>/dev/null || true
python3 bench/hops.py "$SPANS"
