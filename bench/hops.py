"""Per-hop latency of messages from their traces (bench/hops.sh).

Reads the OpenTelemetry Collector's file exporter output (one OTLP/JSON
export request per line), groups spans by trace, and for every message whose
trace is complete (send, process, store, route, deliver) measures each hop;
prints p50 and p90 per hop.

    python3 bench/hops.py SPANS.jsonl
"""

import collections
import json
import sys

# Where each hop starts and ends: (span, "start" | "end"). Consecutive, so
# they add up to the whole trip. A consumer can read a record a moment
# before its producer has the broker's ack, so a hop "to" the next process
# can be about 0.
HOPS = [
    ("edge: accept to the broker's ack (linger + produce)", ("send", "start"), ("send", "end")),
    ("to the persister (broker, fetch, poll)", ("send", "end"), ("process", "start")),
    ("persister: decode", ("process", "start"), ("store", "start")),
    ("persister: store the batch (one transaction)", ("store", "start"), ("store", "end")),
    ("persister: publish the event, wait for its ack", ("store", "end"), ("process", "end")),
    ("to the router (from the persister's ack)", ("process", "end"), ("route", "start")),
    ("router: produce to the edge's topic, wait for its ack", ("route", "start"), ("route", "end")),
    ("to the edge (from the router's ack)", ("route", "end"), ("deliver", "start")),
    ("edge: to the sockets' queues", ("deliver", "start"), ("deliver", "end")),
    ("the whole trip (accept to the first socket queue)", ("send", "start"), ("deliver", "end")),
]


def spans(path):
    with open(path) as lines:
        for line in lines:
            for resource in json.loads(line).get("resourceSpans", []):
                for scope in resource["scopeSpans"]:
                    yield from scope["spans"]


def main(path):
    traces = collections.defaultdict(dict)
    for span in spans(path):
        kind = span["name"].split(" ")[0]
        times = {"start": int(span["startTimeUnixNano"]), "end": int(span["endTimeUnixNano"])}
        # A message is delivered once per edge with members: take the first.
        known = traces[span["traceId"]].get(kind)
        if known is None or times["start"] < known["start"]:
            traces[span["traceId"]][kind] = times
    kinds = {kind for _, start, end in HOPS for kind in (start[0], end[0])}
    complete = [t for t in traces.values() if kinds <= t.keys()]
    print(f"{len(complete)} messages with a complete trace (of {len(traces)} traces)")
    if not complete:
        return 1
    for name, (a, at), (b, bt) in HOPS:
        took = sorted(t[b][bt] - t[a][at] for t in complete)
        p50, p90 = took[len(took) // 2], took[int(len(took) * 0.9)]
        print(f"  {name:55s} p50 {p50 / 1e6:6.2f} ms   p90 {p90 / 1e6:6.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
