"""PROTOCOL.md "Close codes" 4008: a client that stops reading while its
room is busy is closed with 4008 right behind what was already on its way,
and finds every stored message again by rejoining with `since`.

One flood (module fixture), three checks: the slow client's 4008, the fast
readers in the same room, and the slow client's rejoin."""

from __future__ import annotations

import threading
import time

import pytest

from client import (CLOSE_TIMEOUT_S, KERNEL_SEND_BUFFER_BYTES, LEDGER, SEND_QUEUE_BYTES, WS_WRITE_BUFFER_BYTES,
                    Conn, RawWs, Session, uniq)

FLOODERS = 8
# 496 messages of max_body_bytes: ~2 MiB, about twice what fills the 1 MiB
# queue and the buffers, and no more than max_replay (500), so the rejoin
# falls in the "recovered: true, every message after since" row.
PER_FLOODER = 62
RESUME_AFTER_S = 7.0  # from when the slow client stops reading; the overflow comes ~1 s in, the close timeout is 10 s


class Flooder(threading.Thread):
    def __init__(self, i: int, room: str, body_bytes: int, start_flag: threading.Event):
        super().__init__(daemon=True, name=f"flooder-{i}")
        self.i = i
        self.room = room
        self.body_bytes = body_bytes
        self.start_flag = start_flag
        self.conn = Conn.open(i % 2, label=f"flooder{i}@edge{i % 2}")
        self.conn.join(room)
        self.error: BaseException | None = None
        self.sent_done = threading.Event()

    def body(self, j: int) -> str:
        head = f"flood {self.i}/{j} "
        return head + "x" * (self.body_bytes - len(head))

    def run(self) -> None:
        try:
            self.start_flag.wait(30)
            refs = {}
            for j in range(PER_FLOODER):
                cid = f"flood-{self.i}-{j}"
                refs[cid] = self.conn.say(self.room, self.body(j), client_id=cid, wait=False)[0]
            self.conn.wait_replies(refs.values(), timeout=30)
            # A send the server could not take now is retried with the same
            # client_id, as the protocol asks (`unavailable`); none should be
            # rate limited: the flooders stay under the rate.
            for _ in range(20):
                refused = {cid: r for cid, r in refs.items() if LEDGER.state(r) == "refused"}
                if not refused:
                    break
                for cid, r in refused.items():
                    code = LEDGER.entry(r)["code"]
                    assert code == "unavailable", f"{cid} refused with {code}"
                time.sleep(0.5)
                for cid in refused:
                    refs[cid] = self.conn.say(self.room, self.body(int(cid.rsplit("-", 1)[1])), client_id=cid,
                                              wait=False)[0]
                self.conn.wait_replies(refs.values(), timeout=30)
            assert all(LEDGER.state(r) == "acked" for r in refs.values()), "sends still refused after retries"
        except BaseException as e:
            self.error = e
        finally:
            self.sent_done.set()


@pytest.fixture(scope="module")
def flood():
    room = uniq("flood")
    slow = RawWs(0, rcvbuf=4096, label="slow-consumer@edge0")
    flooders: list[Flooder] = []
    try:
        limits = slow.welcome["limits"]
        slow.send_json({"type": "join", "ref": "slow-join", "room": room})
        kind, joined = slow.recv_frame(10)
        assert kind == "text" and joined["type"] == "joined", joined
        assert joined["last_seq"] == 0

        go = threading.Event()
        flooders = [Flooder(i, room, limits["max_body_bytes"], go) for i in range(FLOODERS)]
        for f in flooders:
            f.start()
        # From here on the slow client reads nothing.
        stopped = time.monotonic()
        read_before = slow.bytes_received
        go.set()
        for f in flooders:
            f.sent_done.wait(60)
        for f in flooders:
            if f.error:
                raise f.error
        assert time.monotonic() - stopped < RESUME_AFTER_S, "the flood took too long to check the close timeout"
        time.sleep(max(0.0, RESUME_AFTER_S - (time.monotonic() - stopped)))

        resumed = time.monotonic()
        result = {"room": room, "user": slow.user, "epoch": joined["epoch"], "limits": limits,
                  "total": FLOODERS * PER_FLOODER, "rcvbuf": slow.rcvbuf(), "flooders": flooders,
                  "stopped_for": resumed - stopped}
        try:
            code, frames = slow.read_until_close(CLOSE_TIMEOUT_S + 5)
            slow.reply_close()
        except ConnectionError as e:
            code, frames = None, []
            result["error"] = str(e)
        result.update(code=code, reason=slow.close_reason, closed_after=time.monotonic() - resumed,
                      in_flight=slow.bytes_received - read_before,
                      messages=[f for f in frames if f["type"] == "message"])
        Session.note(f"note: slow consumer: Close {code} after {len(result['messages'])} messages / "
                     f"{result['in_flight']} bytes read on resuming ({result['closed_after']:.2f}s), of "
                     f"{result['total']} sent; client SO_RCVBUF {result['rcvbuf']}")
        slow.close()
        yield result
    finally:
        slow.close()
        for f in flooders:
            f.conn.close()


def test_slow_consumer_is_closed_with_4008_behind_what_was_in_flight(flood):
    assert "error" not in flood, (
        f"slow consumer: no Close 4008: {flood['error']}; it resumed reading {flood['stopped_for']:.1f}s after "
        f"stopping, {flood['in_flight']} bytes read")
    assert flood["code"] == 4008, f"expected Close 4008, got {flood['code']} ({flood['reason']!r})"
    assert flood["closed_after"] < CLOSE_TIMEOUT_S
    seqs = [m["seq"] for m in flood["messages"]]
    assert seqs == list(range(1, len(seqs) + 1)), f"what arrived before the 4008 is not 1..n in order: {seqs[:20]}"
    assert len(seqs) < flood["total"], "nothing was dropped: the queue never overflowed"
    limits = flood["limits"]
    bound = WS_WRITE_BUFFER_BYTES + limits["max_frame_bytes"] + KERNEL_SEND_BUFFER_BYTES + flood["rcvbuf"] + 16 * 1024
    assert flood["in_flight"] <= bound, (
        f"{flood['in_flight']} bytes arrived before the 4008; PROTOCOL.md bounds what is on its way by the write "
        f"buffer (128 KiB and one frame) and the kernel send buffer (2 x 64 KiB), plus this client's receive "
        f"buffer ({flood['rcvbuf']}): {bound}")
    assert flood["in_flight"] < SEND_QUEUE_BYTES, "the dropped queue was delivered"


def test_fast_readers_in_the_flooded_room_got_every_message_in_order(flood):
    total = flood["total"]
    for f in flood["flooders"]:
        got = f.conn.messages(flood["room"], total, timeout=60)
        assert [m["seq"] for m in got] == list(range(1, total + 1)), f"{f.conn}: gap or disorder"


def test_after_4008_a_rejoin_with_since_replays_what_was_missed(flood):
    """PROTOCOL.md: "On 4008, reconnect and rejoin with since: nothing stored
    is lost, it is replayed"."""
    room, total, limits = flood["room"], flood["total"], flood["limits"]
    last_seen = flood["messages"][-1]["seq"] if flood["messages"] else 0
    behind = total - last_seen
    assert behind <= limits["max_replay"]
    expected = list(range(last_seen + 1, total + 1))
    back = Conn.open(0, flood["user"], label="slow-consumer-back@edge0")
    try:
        rejoined, replay = back.join_and_replay(
            room, since=last_seen, epoch=flood["epoch"], count=len(expected),
            what=f"after the 4008, a rejoin with since={last_seen} ({behind} messages of {limits['max_body_bytes']} "
                 f"bytes to replay, ~{behind * (limits['max_body_bytes'] + 200) // 1024} KiB, within max_replay "
                 f"{limits['max_replay']})",
            why="PROTOCOL.md: 'On 4008, reconnect and rejoin with since: nothing stored is lost, it is replayed'")
        assert rejoined["last_seq"] == total and rejoined["recovered"] is True, rejoined
        assert [m["seq"] for m in replay] == expected
    finally:
        back.close()
