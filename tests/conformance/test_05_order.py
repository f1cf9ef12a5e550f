"""PROTOCOL.md "Order": one connection's sends are stored and delivered in
the order it sent them, whether or not it waits for each ack."""

from __future__ import annotations

import pytest

from client import LEDGER, Conn, uniq

N = 30


@pytest.mark.parametrize("src,dst", [(0, 1), (1, 0)])
def test_back_to_back_sends_arrive_in_send_order_on_the_other_edge(src, dst):
    room = uniq("order")
    reader = Conn.open(dst)
    sender = Conn.open(src)
    try:
        reader.join(room)
        sender.join(room)
        client_ids = [f"o{i:02d}" for i in range(N)]
        # Back to back, without waiting for acks (1 join + 30 sends: within the burst).
        refs = [sender.say(room, f"#{i}", client_id=cid, wait=False, paced=False)[0]
                for i, cid in enumerate(client_ids)]
        sender.wait_replies(refs)
        states = {LEDGER.state(r) for r in refs}
        assert states == {"acked"}, f"within the burst every send must be accepted: {states}"
        for conn in (reader, sender):
            got = conn.messages(room, N)
            assert [m["client_id"] for m in got] == client_ids, f"{conn}: not in send order"
            assert [m["seq"] for m in got] == list(range(1, N + 1)), f"{conn}: seqs not consecutive"
            assert [m["id"] for m in got] == [LEDGER.entry(r)["id"] for r in refs], "message ids differ from the acks"
        late = Conn.open(dst)
        try:
            joined = late.join(room, since=0)
            assert joined["last_seq"] == N and joined["recovered"] is True, joined
            got = late.messages(room, N)
            assert [m["client_id"] for m in got] == client_ids
            assert [m["seq"] for m in got] == list(range(1, N + 1))
        finally:
            late.close()
    finally:
        sender.close()
        reader.close()


def test_two_rooms_each_keep_their_own_order():
    a, b = uniq("orderA"), uniq("orderB")
    sender = Conn.open(0)
    reader = Conn.open(1)
    try:
        for c in (sender, reader):
            c.join(a)
            c.join(b)
        refs = []
        for i in range(12):
            refs.append(sender.say(a if i % 2 == 0 else b, f"{i}", client_id=f"x{i}", wait=False, paced=False)[0])
        sender.wait_replies(refs)
        got_a = reader.messages(a, 6)
        got_b = reader.messages(b, 6)
        assert [m["client_id"] for m in got_a] == [f"x{i}" for i in range(0, 12, 2)]
        assert [m["client_id"] for m in got_b] == [f"x{i}" for i in range(1, 12, 2)]
        assert [m["seq"] for m in got_a] == list(range(1, 7)) == [m["seq"] for m in got_b]
    finally:
        sender.close()
        reader.close()
