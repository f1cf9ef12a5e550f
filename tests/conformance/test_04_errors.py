"""PROTOCOL.md "Errors": every code a client can provoke, on both edges.
The connection stays usable after each (checked with a ping)."""

from __future__ import annotations

import json
import time

import pytest

from client import (EDGE_IDS, LEDGER, MAX_CLIENT_ID_BYTES, MAX_ID_BYTES, MAX_REF_BYTES, MAX_ROOMS_PER_CONNECTION,
                    Conn, new_ref, uniq)



@pytest.fixture(params=EDGE_IDS, ids=lambda e: f"edge{e}")
def conn(request):
    c = Conn.open(request.param)
    yield c
    c.close()


@pytest.mark.parametrize("text", [
    "{not json",
    "[1, 2]",
    "42",
    '"a string"',
    "null",
    "",
    '{"type":"ping","ref":"trailing"} garbage',
])
def test_bad_json(conn, text):
    conn.send_text(text)
    conn.expect_error(None, "bad_json")
    conn.ping()


def test_binary_frame(conn):
    conn.send_binary(b"\x00\x01binary")
    conn.expect_error(None, "binary_frame")
    conn.ping()


@pytest.mark.parametrize("frame", [
    {"type": "shout"},
    {},
    {"type": "PING"},
    {"type": "welcome"},
], ids=["unknown", "missing", "wrong-case", "server-frame-type"])
def test_unknown_type(conn, frame):
    ref = new_ref("u")
    conn.send_json({**frame, "ref": ref}, valid=False)
    conn.expect_error(ref, "unknown_type")
    conn.ping()


def _invalid_frames(room: str) -> dict[str, dict]:
    return {
        "unknown-field-on-ping": {"type": "ping", "extra": 1},
        "unknown-field-on-join": {"type": "join", "room": room + "x", "password": "hunter2"},
        "missing-room": {"type": "join"},
        "missing-body": {"type": "send", "room": room, "client_id": uniq("c")},
        "missing-client-id": {"type": "send", "room": room, "body": "b"},
        "since-a-string": {"type": "join", "room": room + "y", "since": "3"},
        "since-negative": {"type": "join", "room": room + "y", "since": -1},
        "since-fractional": {"type": "join", "room": room + "y", "since": 1.5},
        "epoch-a-string": {"type": "join", "room": room + "y", "since": 1, "epoch": "one"},
        "room-a-number": {"type": "join", "room": 5},
        "body-a-number": {"type": "send", "room": room, "client_id": uniq("c"), "body": 5},
        "client-id-too-long": {"type": "send", "room": room, "client_id": "c" * (MAX_CLIENT_ID_BYTES + 1), "body": "b"},
        "client-id-too-long-multibyte": {"type": "send", "room": room, "client_id": "é" * 33, "body": "b"},
        "client-id-empty": {"type": "send", "room": room, "client_id": "", "body": "b"},
        "nul-in-body": {"type": "send", "room": room, "client_id": uniq("c"), "body": "a\u0000b"},
        "traceparent-uppercase": {"type": "send", "room": room, "client_id": uniq("c"), "body": "b",
                                  "traceparent": "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01"},
        "traceparent-other-version": {"type": "send", "room": room, "client_id": uniq("c"), "body": "b",
                                      "traceparent": "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        "traceparent-zero-trace-id": {"type": "send", "room": room, "client_id": uniq("c"), "body": "b",
                                      "traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"},
        "traceparent-a-number": {"type": "send", "room": room, "client_id": uniq("c"), "body": "b", "traceparent": 1},
    }


INVALID_CASES = list(_invalid_frames("x"))


@pytest.mark.parametrize("case", INVALID_CASES)
def test_invalid_frame_with_a_readable_ref(conn, case):
    room = uniq("inv")
    conn.join(room)
    ref = new_ref("i")
    frame = {**_invalid_frames(room)[case], "ref": ref}
    conn.send_json(frame, valid=False)
    conn.expect_error(ref, "invalid_frame")
    conn.ping()
    # Nothing was stored: a valid send afterwards is seq 1.
    conn.say(room, "valid")
    (m,) = conn.messages(room, 1)
    assert m["seq"] == 1, m


@pytest.mark.parametrize("case", ["ref-too-long", "ref-too-long-multibyte", "ref-a-number", "ref-null", "ref-missing",
                                  "send-with-ref-too-long"])
def test_invalid_frame_whose_ref_cannot_be_read_gets_an_error_without_ref(conn, case):
    frame: dict
    if case == "ref-too-long":
        frame = {"type": "ping", "ref": "r" * (MAX_REF_BYTES + 1)}
    elif case == "ref-too-long-multibyte":
        frame = {"type": "ping", "ref": "é" * 33}
    elif case == "ref-a-number":
        frame = {"type": "ping", "ref": 7}
    elif case == "ref-null":
        frame = {"type": "ping", "ref": None}
    elif case == "ref-missing":
        frame = {"type": "ping"}
    else:
        room = uniq("inv")
        conn.join(room)
        frame = {"type": "send", "ref": "s" * (MAX_REF_BYTES + 1), "room": room, "client_id": uniq("c"), "body": "b"}
    key = conn.send_json(frame, valid=False)
    conn.expect_error(None, "invalid_frame")
    if key is not None:
        LEDGER.resolve(key, "refused", "invalid_frame", "ref over 64 bytes: the error has no ref")
    conn.ping()


def test_a_send_with_the_clients_traceparent_is_accepted(conn):
    room = uniq("traced")
    conn.join(room)
    ref = new_ref("s")
    conn.send_json({"type": "send", "ref": ref, "room": room, "client_id": uniq("c"), "body": "traced",
                    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    ack = conn.reply(ref, 15)
    assert ack["type"] == "ack" and ack["status"] == "accepted", ack
    (m,) = conn.messages(room, 1)
    assert m["body"] == "traced" and "traceparent" not in m, m


def test_boundaries_that_are_valid(conn):
    room = uniq("bounds")
    conn.join(room)
    for client_id in ("c" * MAX_CLIENT_ID_BYTES, "é" * (MAX_CLIENT_ID_BYTES // 2), "x", "any chars: ✓ / \" \\"):
        conn.say(room, "ok", client_id=client_id)
    msgs = conn.messages(room, 4)
    assert [m["seq"] for m in msgs] == [1, 2, 3, 4]


@pytest.mark.parametrize("room", [
    "café", "日本", "", "a" * (MAX_ID_BYTES + 1), "has space", "slash/room", "tab\troom", "emoji😀", "semi;colon",
    "at@sign", "new\nline",
], ids=["cafe", "nihon", "empty", "too-long", "space", "slash", "tab", "emoji", "semicolon", "at", "newline"])
def test_invalid_room(conn, room):
    ref = conn.request("join", room=room)
    conn.expect_error(ref, "invalid_room")
    conn.ping()


def test_valid_room_ids_and_case_sensitivity(conn):
    longest = (uniq("L") + "-" + "r" * MAX_ID_BYTES)[:MAX_ID_BYTES]
    punct = "team:eng.general_" + uniq("X")
    conn.join(longest)
    conn.join(punct)
    upper = "Case-" + uniq("Room")
    lower = upper.lower()
    conn.join(upper)
    conn.join(lower)  # a different room: no already_joined
    conn.say(upper, "in upper")
    (m,) = conn.messages(upper, 1)
    assert m["room"] == upper
    assert [f for f in conn.drain(0.5) if f["type"] == "message" and f["room"] == lower] == []


def test_body_too_large(conn):
    room = uniq("body")
    conn.join(room)
    max_body = conn.limits["max_body_bytes"]
    for body in ("", "x" * (max_body + 1), "é" * (max_body // 2 + 1)):
        ref, _ = conn.say(room, body, wait=False)
        conn.expect_error(ref, "body_too_large")
    accepted = ["x" * max_body, "é" * (max_body // 2), "😀" * (max_body // 4), "y"]
    for body in accepted:
        conn.say(room, body)
    msgs = conn.messages(room, len(accepted))
    assert [m["body"] for m in msgs] == accepted
    assert [m["seq"] for m in msgs] == [1, 2, 3, 4]


def test_not_joined(conn):
    room = uniq("nj")
    ref, _ = conn.say(room, wait=False)
    conn.expect_error(ref, "not_joined")
    ref = conn.request("typing", room=room)
    conn.expect_error(ref, "not_joined")
    ref = conn.request("leave", room=room)
    conn.expect_error(ref, "not_joined")
    conn.ping()


def test_already_joined(conn):
    room = uniq("aj")
    first = conn.join(room)
    ref = conn.request("join", room=room, since=0, epoch=first["epoch"])
    conn.expect_error(ref, "already_joined")
    # The first join stays in effect, once: one copy of each message.
    _, ack = conn.say(room, "still in")
    (m,) = conn.messages(room, 1)
    assert m["id"] == ack["id"]
    assert [f for f in conn.drain(0.5) if f["type"] == "message"] == []
    conn.leave(room)
    ref = conn.request("leave", room=room)
    conn.expect_error(ref, "not_joined")


def test_rate_limited_pings(conn):
    burst, rate = conn.limits["rate_burst"], conn.limits["rate_per_second"]
    time.sleep(conn.limits["rate_burst"] / rate)  # let the server's bucket refill fully after open
    n = burst + 20
    refs = [new_ref("rl") for _ in range(n)]
    start = time.monotonic()
    for ref in refs:
        conn.send_json({"type": "ping", "ref": ref}, paced=False)
    elapsed = time.monotonic() - start
    replies = [conn.reply(ref) for ref in refs]
    pongs = [r for r in replies if r["type"] == "pong"]
    limited = [r for r in replies if r["type"] == "error"]
    assert all(r["code"] == "rate_limited" for r in limited), limited[:3]
    assert len(pongs) + len(limited) == n
    assert len(pongs) >= burst, f"only {len(pongs)} of a burst of {burst} answered"
    assert len(pongs) <= burst + rate * (elapsed + 0.5) + 1, (len(pongs), elapsed)
    assert limited, "no rate_limited error after a burst over rate_burst"
    # Usable again once the bucket refills.
    time.sleep(2.0)
    conn.pacer.tokens = 0
    conn.ping()


@pytest.mark.parametrize("kind", ["bad_json", "binary_frame", "unknown_type", "invalid_frame"])
def test_every_frame_counts_toward_the_rate_malformed_ones_included(conn, kind):
    burst, rate = conn.limits["rate_burst"], conn.limits["rate_per_second"]
    time.sleep(burst / rate)
    n = burst + 10
    for i in range(n):
        if kind == "bad_json":
            conn.send_text("{oops", paced=False)
        elif kind == "binary_frame":
            conn.send_binary(b"\x01\x02", paced=False)
        elif kind == "unknown_type":
            conn.send_json({"type": "shout", "ref": f"m{i}"}, paced=False, valid=False)
        else:
            conn.send_json({"type": "ping", "ref": f"m{i}", "extra": True}, paced=False, valid=False)
    ref = new_ref("after")
    conn.send_json({"type": "ping", "ref": ref}, paced=False)
    reply = conn.reply(ref)
    assert reply["type"] == "error" and reply["code"] == "rate_limited", (
        f"after {n} {kind} frames in a burst of {burst}, a ping was answered {reply}: malformed frames must count")
    errors = [f for f in conn.drain(1.0) if f["type"] == "error"]
    codes = [e["code"] for e in errors]
    assert len(errors) == n, f"{n} malformed frames, {len(errors)} errors: {codes}"
    assert set(codes) <= {kind, "rate_limited"} and "rate_limited" in codes, codes
    time.sleep(2.0)
    conn.pacer.tokens = 0
    conn.ping()


def test_rate_limited_sends_are_dropped_and_a_retry_is_stored_after(conn):
    room = uniq("rlsend")
    other = Conn.open(1 - conn.edge)
    try:
        other.join(room)
        conn.join(room)
        burst, rate = conn.limits["rate_burst"], conn.limits["rate_per_second"]
        time.sleep(burst / rate)
        n = burst + 10
        sends = [(conn.say(room, f"burst {i}", client_id=f"b{i:02d}", wait=False, paced=False)[0], f"b{i:02d}")
                 for i in range(n)]
        conn.wait_replies([r for r, _ in sends])
        acked = [cid for r, cid in sends if LEDGER.state(r) == "acked"]
        refused = [(r, cid) for r, cid in sends if LEDGER.state(r) == "refused"]
        assert len(acked) + len(refused) == n
        assert refused, "no send was rate limited"
        assert all(LEDGER.entry(r)["code"] == "rate_limited" for r, _ in refused)
        got = other.messages(room, len(acked))
        assert [m["client_id"] for m in got] == acked, "a connection's accepted sends are stored in send order"
        assert [m["seq"] for m in got] == list(range(1, len(acked) + 1))
        assert [f for f in other.drain(0.5) if f["type"] == "message"] == [], "a rate-limited send was stored"
        # Retry the dropped ones with the same client_ids: stored after.
        time.sleep(1.5)
        conn.pacer.tokens = 0
        for _, cid in refused:
            conn.say(room, "retry", client_id=cid)
        got = other.messages(room, len(refused))
        assert [m["client_id"] for m in got] == [cid for _, cid in refused]
        assert [m["seq"] for m in got] == list(range(len(acked) + 1, n + 1))
    finally:
        other.close()


def test_too_many_rooms():
    conn = Conn.open(1)
    try:
        prefix = uniq("many")
        rooms = [f"{prefix}-{i}" for i in range(MAX_ROOMS_PER_CONNECTION + 1)]
        refs = {}
        for room in rooms[:MAX_ROOMS_PER_CONNECTION]:
            ref = conn.request("join", room=room)
            refs[ref] = room
            conn.read_ready()
        for ref, room in refs.items():
            reply = conn.reply(ref, timeout=20)
            assert reply["type"] == "joined" and reply["room"] == room, reply
        ref = conn.request("join", room=rooms[-1])
        conn.expect_error(ref, "too_many_rooms")
        conn.leave(rooms[0])
        conn.join(rooms[-1])
        ref = conn.request("join", room=rooms[0])
        conn.expect_error(ref, "too_many_rooms")
        conn.ping()
    finally:
        conn.close()


def test_error_frames_keep_the_connection_usable_for_sends(conn):
    room = uniq("usable")
    conn.join(room)
    conn.send_text("{broken")
    conn.expect_error(None, "bad_json")
    _, ack = conn.say(room, "after the error")
    (m,) = conn.messages(room, 1)
    assert m["id"] == ack["id"] and m["seq"] == 1
    json.dumps(m)
