#!/usr/bin/env bash
# More edges, the same load: for each edge count, a persister, a router and
# that many edges on the project's Kafka and PostgreSQL, 1,000 msg/s in
# rooms of 10 over 2,000 connections (spread round robin over the edges),
# and what the router writes per event (delivery records), its CPU per
# event, and every process's cores. docs/capacity.md tests its model with it.
#
#   bench/edges.sh              2, 4, 8 and 16 edges
#   bench/edges.sh "2 20"       the edge counts to run
set -euo pipefail
source "$(dirname "$0")/services.sh"
COUNTS="${1:-2 4 8 16}"
RATE=1000
CONNECTIONS=2000
WORK="$ROOT/.work/edges"
mkdir -p "$WORK"
export SB_JWT_SECRET="edges-bench-secret-0123456789abcdef"
ROUTER_OPS=127.0.0.1:28399
router_metric() { metric "switchboard_router_$1_total" "$ROUTER_OPS"; }

for count in $COUNTS; do
    database DB "edges_${STAMP}_$count"
    export SB_TOPIC_PREFIX="edges${STAMP}n$count"
    workers 4 "$DB" "$WORK" "$ROUTER_OPS"
    run=("$ROUTER" "$PERSISTER")
    targets=()
    for i in $(seq "$count"); do
        # A small pool each: 16 edges of the default 8 would pass PostgreSQL's 100 connections.
        "$BIN/edge" --node-id "edge-$i" --listen "127.0.0.1:$((28300 + i))" --database-url "$DB" \
            --database-max-connections 3 >"$WORK/edge-$i.log" 2>&1 &
        run+=($!)
        pids+=($!)
        targets+=("127.0.0.1:$((28300 + i))")
    done
    for target in "${targets[@]}"; do wait_ready "$target"; done
    watched="$(IFS=,; echo "${run[*]},$(cat .work/kafka/kafka.pid),$(scripts/postgres.sh pid)")"
    drive() {
        "$BIN/sbbench" drive --protocol switchboard --targets "$(IFS=,; echo "${targets[*]}")" \
            --connections "$CONNECTIONS" --room-size 10 --rate "$RATE" --warmup 2s --duration "$1" --pids "$watched"
    }
    drive 20s >/dev/null 2>"$WORK/drive.log"  # warm-up: the broker's JIT, the routes
    events0="$(router_metric events_routed)"
    records0="$(router_metric deliveries_produced)"
    drive 10s >"$WORK/drive-$count.json" 2>"$WORK/drive.log"
    events1="$(router_metric events_routed)"
    records1="$(router_metric deliveries_produced)"
    python3 - "$WORK/drive-$count.json" "$count" "$((events1 - events0))" "$((records1 - records0))" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
count, events, records = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
split = d["server_cpu_split"]
per_event = split.get("router", 0) * 1e6 / max(d["accepted_per_sec"], 1)
print(f"{count} edges: {records / max(events, 1):.2f} delivery records per event, router {per_event:.0f} µs CPU per event, "
      f"p50 {d['p50_ms']:.1f} ms, p99 {d['p99_ms']:.1f} ms, {d['deliveries_per_sec']:.0f} deliveries/s, "
      f"{d['server_cpu_cores']:.2f} cores: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(split.items())))
PY
    kill "${run[@]}"
    wait "${run[@]}" 2>/dev/null || true
    "$BIN/sbctl" delete-topics --execute --ignore-members >/dev/null || true
done
