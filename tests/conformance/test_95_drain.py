"""PROTOCOL.md: a draining node closes its clients with 1012 and refuses
new handshakes with 503 `draining`. This SIGTERMs the server process(es)
(SB_CONFORMANCE_PID): nothing after it may need the server.

A node that drains stops accepting TCP connections almost at once, so a
handshake on a new connection mostly finds the port closed (also a way of
saying "connect to another node"). The 503 is checked on HTTP keep-alive
connections the node accepted before the signal: once the node reports that
it drains (its /readyz, an operations endpoint, used here only to know
when), an upgrade request on such a connection is a new handshake during
the drain."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from tools import alive
from client import EDGES, LEDGER, PIDS, Closed, Conn, KeepAlive, Session, assert_refusal_body, handshake, mint, uniq

KEEPALIVES_PER_EDGE = 4


class Prober(threading.Thread):
    """New TCP connections with a handshake each, in a loop, while the nodes drain."""

    def __init__(self):
        super().__init__(daemon=True, name="drain-prober")
        self.results: dict[int, list[tuple[float, object]]] = {i: [] for i in range(len(EDGES))}
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        gone: set[int] = set()
        while not self.stop.is_set() and len(gone) < len(EDGES):
            for edge in range(len(EDGES)):
                if edge in gone:
                    continue
                try:
                    r = handshake(edge, token=mint(uniq("prober")), timeout=2)
                    outcome: object = (r.status, r.body)
                except ConnectionRefusedError as e:
                    outcome = type(e).__name__
                    gone.add(edge)
                except (OSError, ConnectionError) as e:
                    outcome = type(e).__name__
                self.results[edge].append((time.monotonic() - self.t0, outcome))
            time.sleep(0.005)


def _upgrades_during_drain(edge: int, keepalives: list[KeepAlive], out: list) -> None:
    """Waits until the node reports draining on one keep-alive connection,
    then sends an upgrade on each of the others."""
    watcher, rest = keepalives[0], keepalives[1:]
    deadline = time.monotonic() + 5
    draining = False
    while time.monotonic() < deadline:
        try:
            status, _, _ = watcher.request("/readyz")
        except (OSError, ConnectionError) as e:
            out.append((edge, "readyz", type(e).__name__))
            break
        if status == 503:
            draining = True
            break
        time.sleep(0.002)
    if not draining:
        out.append((edge, "readyz", "never 503"))
        return
    for ka in rest:
        try:
            out.append((edge, "upgrade", ka.upgrade(mint(uniq("late")))))
        except (OSError, ConnectionError) as e:
            out.append((edge, "upgrade", type(e).__name__))


@pytest.mark.skipif(not PIDS, reason="SB_CONFORMANCE_PID not set: the server process is not ours to stop")
def test_draining_closes_clients_with_1012_and_refuses_handshakes_with_503():
    room = uniq("drain")
    a, b = Conn.open(0), Conn.open(1)
    a.join(room)
    b.join(room)
    ref, _ = a.say(room, "before the drain")
    assert LEDGER.state(ref) == "acked"  # every send is answered before the signal
    b.messages(room, 1)
    a.messages(room, 1)

    keepalives = {edge: [KeepAlive(edge) for _ in range(KEEPALIVES_PER_EDGE)] for edge in range(len(EDGES))}
    for conns in keepalives.values():
        for ka in conns:
            status, _, _ = ka.request("/healthz")  # the node has accepted and serves this connection
            assert status == 200
    prober = Prober()
    prober.start()
    time.sleep(0.05)
    late: list = []
    workers = [threading.Thread(target=_upgrades_during_drain, args=(edge, kas, late), daemon=True)
               for edge, kas in keepalives.items()]
    for pid in PIDS:
        os.kill(pid, signal.SIGTERM)
    for w in workers:
        w.start()
    try:
        for conn in (a, b):
            deadline = time.monotonic() + 30
            code = None
            while time.monotonic() < deadline:
                try:
                    conn.recv(timeout=max(0.1, deadline - time.monotonic()))
                except Closed as e:
                    code = e.code
                    break
            assert code == 1012, f"{conn}: expected Close 1012 on drain, got {code}"
    finally:
        for w in workers:
            w.join(10)
        deadline = time.monotonic() + 30
        while any(alive(p) for p in PIDS) and time.monotonic() < deadline:
            time.sleep(0.1)
        prober.stop.set()
        prober.join(10)
        for conn in (a, b):
            conn.ws.close()
        for conns in keepalives.values():
            for ka in conns:
                ka.close()
    assert not any(alive(p) for p in PIDS), f"server process(es) {PIDS} still running 30 s after SIGTERM"

    # New connections during the drain: accepted before it, refused (503) or the port closed after.
    for edge, results in prober.results.items():
        statuses = [o[0] for _, o in results if isinstance(o, tuple)]
        for _, o in results:
            if isinstance(o, tuple) and o[0] != 101:
                assert o[0] == 503, f"edge {edge}: a handshake during the drain got {o}"
                assert_refusal_body(json.loads(o[1]), "draining")
        if 503 in statuses:
            assert 101 not in statuses[statuses.index(503):], f"edge {edge}: accepted a handshake after a 503"
        Session.note(f"note: drain: edge {edge}, new connections: {statuses.count(101)} accepted before the drain, "
                     f"{statuses.count(503)} refused with 503, "
                     f"{sum(1 for _, o in results if not isinstance(o, tuple))} found the port closed")

    # Upgrades on connections accepted before the drain, sent once it drains.
    answered = [(edge, r) for edge, kind, r in late if kind == "upgrade" and isinstance(r, tuple)]
    for edge, (status, body) in answered:
        assert status == 503, f"edge {edge}: an upgrade during the drain was answered {status} {body[:200]!r}"
        assert_refusal_body(json.loads(body), "draining")
    Session.note(f"note: drain: upgrades sent during the drain on connections accepted before it: {late}")
    if not answered:
        Session.note("not exercised: 503 draining: no upgrade could be sent while the nodes drained")
    assert answered, f"no handshake could be made during the drain: {late}"
