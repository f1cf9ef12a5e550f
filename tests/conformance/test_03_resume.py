"""PROTOCOL.md "Resume": join with since/epoch, `recovered`, the replay."""

from __future__ import annotations

import time

import pytest

from client import SEND_QUEUE_BYTES, Conn, uniq

# (case, since, epoch offset or None, recovered, replayed seqs) for a room
# holding seqs 1..5; after the join a live message (seq 6) must follow the
# replay with nothing in between.
CASES = [
    ("no-since", None, None, True, []),
    ("since-equals-last-seq", 5, 0, True, []),
    ("since-behind", 2, 0, True, [3, 4, 5]),
    ("since-behind-without-epoch", 2, None, True, [3, 4, 5]),
    ("since-zero", 0, 0, True, [1, 2, 3, 4, 5]),
    ("since-beyond-last-seq", 9, 0, False, [1, 2, 3, 4, 5]),
    ("since-one-beyond-last-seq", 6, 0, False, [1, 2, 3, 4, 5]),
    ("epoch-mismatch", 2, 1, False, [1, 2, 3, 4, 5]),
    ("epoch-mismatch-at-last-seq", 5, 1, False, [1, 2, 3, 4, 5]),
]


@pytest.mark.parametrize("case,since,epoch_offset,recovered,replayed", CASES, ids=[c[0] for c in CASES])
def test_join_with_since(case, since, epoch_offset, recovered, replayed):
    room = uniq("resume")
    writer = Conn.open(0)
    try:
        epoch = writer.join(room)["epoch"]
        acks = [writer.say(room, f"m{i}")[1] for i in range(1, 6)]
        writer.messages(room, 5)
        joiner = Conn.open(1)
        try:
            joined = joiner.join(room, since=since, epoch=None if epoch_offset is None else epoch + epoch_offset)
            assert joined["epoch"] == epoch, joined
            assert joined["last_seq"] == 5, joined
            assert joined["recovered"] is recovered, f"{case}: {joined}"
            _, live = writer.say(room, "live")
            got = joiner.messages(room, len(replayed) + 1)
            assert [m["seq"] for m in got] == replayed + [6], f"{case}: got seqs {[m['seq'] for m in got]}"
            for m in got[:-1]:
                assert m["id"] == acks[m["seq"] - 1]["id"] and m["body"] == f"m{m['seq']}", m
            assert got[-1]["id"] == live["id"]
        finally:
            joiner.close()
    finally:
        writer.close()


def _wait_for_client_ids(conn: Conn, room: str, cids: set[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while cids:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{conn}: {len(cids)} sends acked but not delivered within {timeout}s"
        m = conn.expect(lambda f: f["type"] == "message" and f["room"] == room, remaining, f"message in {room}")
        cids.discard(m["client_id"])


def _fill(room: str, total: int, body_bytes: int | None = None, per_conn: int = 30) -> int:
    """Writes `total` messages to `room` from connections in turn (each
    within its burst) and returns once all are stored; returns the epoch."""
    sent = 0
    n = 0
    epoch = None
    while sent < total:
        conn = Conn.open(n % 2)
        n += 1
        try:
            epoch = conn.join(room)["epoch"]
            batch = min(per_conn, total - sent)
            cids = [f"fill-{sent + i + 1}" for i in range(batch)]
            bodies = [(f"{cid} " + "z" * body_bytes)[:body_bytes] if body_bytes else f"body {cid}" for cid in cids]
            refs = [conn.say(room, body, client_id=cid, wait=False)[0] for cid, body in zip(cids, bodies)]
            conn.wait_replies(refs)
            _wait_for_client_ids(conn, room, set(cids))
            sent += batch
            conn.leave(room)
        finally:
            conn.close()
    return epoch


def test_a_replay_larger_than_the_send_queue_is_delivered():
    """PROTOCOL.md "Resume": since < last_seq, at most max_replay behind ->
    recovered, every message after since is replayed. With the documented
    defaults (max_replay 500, max_body_bytes 4 KiB, send queue 1 MiB) a
    replay can hold more bytes than the send queue; a client that reads as
    fast as it can must still get all of it (not a 4008)."""
    probe = Conn.open(0)
    limits = probe.limits
    probe.close()
    n = min(limits["max_replay"], 300)
    frame_bytes = limits["max_body_bytes"] + 200
    assert n * frame_bytes > SEND_QUEUE_BYTES, "the replay must exceed the queue for this test to mean anything"
    room = uniq("bigreplay")
    epoch = _fill(room, n, body_bytes=limits["max_body_bytes"])
    reader = Conn.open(1)
    try:
        joined, got = reader.join_and_replay(
            room, since=0, epoch=epoch, count=n,
            what=f"join with since=0 on a room of {n} messages of {limits['max_body_bytes']} bytes "
                 f"(~{n * frame_bytes // 1024} KiB to replay, within max_replay {limits['max_replay']})",
            why=f"the replay overflowed the {SEND_QUEUE_BYTES // 1024} KiB send queue of a client that reads as fast "
                f"as it can")
        assert joined["last_seq"] == n and joined["recovered"] is True, joined
        assert [m["seq"] for m in got] == list(range(1, n + 1))
    finally:
        reader.close()


@pytest.fixture(scope="module")
def long_room():
    """A room with max_replay + 12 messages, so replays can be checked at the bound."""
    probe = Conn.open(0)
    max_replay = probe.limits["max_replay"]
    probe.close()
    room = uniq("long")
    total = max_replay + 12
    epoch = _fill(room, total)
    return room, total, max_replay, epoch


@pytest.mark.parametrize("behind_extra,recovered", [(0, True), (1, False), (None, False)],
                         ids=["exactly-max-replay-behind", "one-more-than-max-replay-behind", "since-1"])
def test_replay_is_bounded_by_max_replay(long_room, behind_extra, recovered):
    room, total, max_replay, epoch = long_room
    since = 1 if behind_extra is None else total - max_replay - behind_extra
    conn = Conn.open(1)
    try:
        joined = conn.join(room, since=since, epoch=epoch)
        assert joined["last_seq"] == total, joined
        assert joined["recovered"] is recovered, (since, joined)
        got = conn.messages(room, max_replay, timeout=30)
        expected = list(range(total - max_replay + 1, total + 1))
        assert [m["seq"] for m in got] == expected
        # Order across connections is not promised, so only distinctness is checked here.
        assert len({m["client_id"] for m in got}) == max_replay
        assert all(m["client_id"].startswith("fill-") for m in got)
        assert [f for f in conn.drain(0.5) if f["type"] == "message"] == []
    finally:
        conn.close()
