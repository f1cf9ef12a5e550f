"""PROTOCOL.md "Client frames", "Messages": every client frame and its reply."""

from __future__ import annotations

import json
import time

import pytest

from client import EDGE_IDS, MAX_NAME_BYTES, MAX_REF_BYTES, Conn, new_ref, uniq

CROSS = [(0, 1), (1, 0)]


@pytest.mark.parametrize("edge", EDGE_IDS)
def test_ping_pong(edge):
    conn = Conn.open(edge)
    try:
        conn.ping()
        # The longest ref, in multi-byte characters: 64 bytes.
        ref = "é" * (MAX_REF_BYTES // 2)
        assert len(ref.encode()) == MAX_REF_BYTES
        conn.send_json({"type": "ping", "ref": ref})
        assert conn.reply(ref) == {"type": "pong", "ref": ref}
        # Refs are the client's own; the server does not check they are unique.
        conn.send_json({"type": "ping", "ref": "same"})
        conn.send_json({"type": "ping", "ref": "same"})
        assert conn.reply("same") == {"type": "pong", "ref": "same"}
        assert conn.reply("same") == {"type": "pong", "ref": "same"}
    finally:
        conn.close()


@pytest.mark.parametrize("edge", EDGE_IDS)
def test_a_key_that_appears_twice_counts_last(edge):
    conn = Conn.open(edge)
    try:
        conn.send_text('{"type":"ping","ref":"first","ref":"second"}')
        assert conn.reply("second") == {"type": "pong", "ref": "second"}
        conn.send_text('{"type":"shout","type":"ping","ref":"dup-type"}')
        assert conn.reply("dup-type") == {"type": "pong", "ref": "dup-type"}
    finally:
        conn.close()


@pytest.mark.parametrize("edge", EDGE_IDS)
def test_join_and_leave(edge):
    room = uniq("jl")
    conn = Conn.open(edge)
    try:
        joined = conn.join(room)
        assert set(joined) == {"type", "ref", "room", "epoch", "last_seq", "recovered", "read_seq", "unread"}, joined
        assert joined["last_seq"] == 0 and joined["recovered"] is True, joined
        assert joined["read_seq"] == 0 and joined["unread"] == 0, joined
        conn.leave(room)
        # Left means left: leave and send now answer not_joined.
        ref = conn.request("leave", room=room)
        conn.expect_error(ref, "not_joined")
        ref, _ = conn.say(room, wait=False)
        conn.expect_error(ref, "not_joined")
        # And it can join again.
        again = conn.join(room)
        assert again["epoch"] == joined["epoch"]
    finally:
        conn.close()


def _check_message(m: dict, *, room: str, seq: int, ack_id: str, client_id: str, sender: str, sender_name: str,
                   body: str) -> None:
    assert m["type"] == "message"
    assert (m["room"], m["seq"], m["id"], m["client_id"], m["sender"], m["sender_name"], m["body"]) == (
        room, seq, ack_id, client_id, sender, sender_name, body), m
    now_ms = time.time() * 1000
    assert abs(m["sent_at"] - now_ms) < 120_000, f"sent_at {m['sent_at']} is not close to now ({now_ms:.0f})"


@pytest.mark.parametrize("src,dst", CROSS)
def test_send_ack_and_message_across_edges(src, dst):
    room = uniq("msg")
    sender_user = uniq("alice")
    alice = Conn.open(src, sender_user, name="Alice Example")
    bob = Conn.open(dst)
    try:
        assert alice.join(room)["last_seq"] == 0
        bob.join(room)
        body = "héllo, wörld ✓ \"quoted\" \\ backslash \n newline"
        ref, ack = alice.say(room, body, client_id="first message")
        assert set(ack) == {"type", "ref", "status", "id"}, ack
        assert ack["ref"] == ref and ack["status"] == "accepted"
        for reader in (bob, alice):  # the sender is a member too
            (m,) = reader.messages(room, 1)
            _check_message(m, room=room, seq=1, ack_id=ack["id"], client_id="first message", sender=sender_user,
                           sender_name="Alice Example", body=body)
        # And back the other way, seq 2.
        _, ack2 = bob.say(room, "reply", client_id="second")
        for reader in (alice, bob):
            (m,) = reader.messages(room, 1)
            assert (m["seq"], m["id"], m["sender"], m["client_id"]) == (2, ack2["id"], bob.user, "second"), m
        assert ack2["id"] != ack["id"]
    finally:
        alice.close()
        bob.close()


@pytest.mark.parametrize("name,shown", [
    (None, None),
    ("", None),
    ("   ", None),
    ("Zoë Ω", "Zoë Ω"),
    ("n" * 100, "n" * MAX_NAME_BYTES),
])
def test_display_name(name, shown):
    """`name` is shown to others, trimmed to 64 bytes; blank means none, then the user id."""
    room = uniq("names")
    user = uniq("named")
    conn = Conn.open(0, user, name=name)
    reader = Conn.open(1)
    try:
        conn.join(room)
        reader.join(room)
        conn.say(room)
        (m,) = reader.messages(room, 1)
        expected = shown if shown is not None else user
        assert m["sender_name"] == expected, (name, m["sender_name"])
        assert len(m["sender_name"].encode()) <= MAX_NAME_BYTES
    finally:
        conn.close()
        reader.close()


def test_long_multibyte_name_is_trimmed_to_64_bytes_of_valid_utf8():
    room = uniq("names")
    name = "é" * 40  # 80 bytes
    conn = Conn.open(0, name=name)
    reader = Conn.open(1)
    try:
        conn.join(room)
        reader.join(room)
        conn.say(room)
        (m,) = reader.messages(room, 1)
        shown = m["sender_name"]
        assert len(shown.encode()) <= MAX_NAME_BYTES and name.startswith(shown) and shown, shown
        assert len(shown.encode()) >= MAX_NAME_BYTES - 1, shown  # trimmed, not emptied
    finally:
        conn.close()
        reader.close()


@pytest.mark.parametrize("src,other", CROSS)
def test_typing_reaches_the_other_members_only(src, other):
    room = uniq("typing")
    typer = Conn.open(src)
    far = Conn.open(other)
    near = Conn.open(src)
    try:
        for c in (typer, far, near):
            c.join(room)
        # Best effort (PROTOCOL.md): a member who joined a moment ago on
        # another node can miss one, so repeat it as clients do while typing.
        refs = []
        seen = {}
        for _ in range(10):
            refs.append(new_ref("t"))
            typer.send_json({"type": "typing", "ref": refs[-1], "room": room})
            for name, c in (("far", far), ("near", near)):
                if name not in seen:
                    got = [f for f in c.drain(1.0) if f["type"] == "typing"]
                    if got:
                        seen[name] = got[0]
            if len(seen) == 2:
                break
        for name in ("far", "near"):
            assert name in seen, f"{name}: no typing within 10 repeats"
            assert seen[name] == {"type": "typing", "room": room, "user": typer.user}, seen[name]
        # No reply to the typer, and not its own typing: by the time the member
        # on its own edge saw it, a pong comes with nothing before it.
        typer.ping()
        extra = [f for f in typer.drain(0.5) if f["type"] in ("typing", "error") or f.get("ref") in refs]
        assert extra == [], extra
    finally:
        for c in (typer, far, near):
            c.close()


@pytest.mark.parametrize("edge", EDGE_IDS)
def test_seqs_are_gapless_with_senders_on_both_edges(edge):
    room = uniq("gapless")
    a, b = Conn.open(0), Conn.open(1)
    reader = Conn.open(edge)
    try:
        for c in (a, b, reader):
            c.join(room)
        refs = []
        for i in range(6):
            refs.append(a.say(room, f"a{i}", wait=False)[0])
            refs.append(b.say(room, f"b{i}", wait=False)[0])
        a.wait_replies(refs[0::2])
        b.wait_replies(refs[1::2])
        msgs = reader.messages(room, 12)
        assert [m["seq"] for m in msgs] == list(range(1, 13)), [m["seq"] for m in msgs]
        assert len({m["id"] for m in msgs}) == 12
    finally:
        for c in (a, b, reader):
            c.close()


@pytest.mark.parametrize("src,dst", CROSS)
def test_resend_with_the_same_client_id_yields_the_same_message(src, dst):
    """id derives from (room, sender, client_id): a resend (same connection,
    or another connection of the same user on the other edge) gets the same
    id and seq; members drop duplicates by (room, seq)."""
    room = uniq("dedupe")
    user = uniq("resender")
    first = Conn.open(src, user)
    reader = Conn.open(dst)
    try:
        first.join(room)
        reader.join(room)
        _, ack = first.say(room, "once", client_id="idem-1")
        (m,) = reader.messages(room, 1)
        assert (m["seq"], m["id"]) == (1, ack["id"])
        # Same connection, same client_id.
        _, ack_again = first.say(room, "once", client_id="idem-1")
        assert ack_again["id"] == ack["id"]
        # Another connection of the same user, on the other edge.
        second = Conn.open(dst, user)
        try:
            second.join(room)
            _, ack_third = second.say(room, "once", client_id="idem-1")
            assert ack_third["id"] == ack["id"]
        finally:
            second.close()
        # A new client_id gets the next seq: the resends took no seq.
        _, ack_new = first.say(room, "twice", client_id="idem-2")
        assert ack_new["id"] != ack["id"]
        seen = {1: m}
        deadline = time.monotonic() + 15
        while 2 not in seen:
            assert time.monotonic() < deadline, f"seq 2 not delivered; saw {sorted(seen)}"
            (f,) = reader.messages(room, 1, timeout=max(0.1, deadline - time.monotonic()))
            if f["seq"] in seen:  # a duplicate delivery must be the same message
                assert f == seen[f["seq"]], (f, seen[f["seq"]])
            seen[f["seq"]] = f
        assert seen[1]["id"] == ack["id"] and seen[1]["client_id"] == "idem-1"
        assert seen[2]["id"] == ack_new["id"] and seen[2]["client_id"] == "idem-2"
        assert set(seen) == {1, 2}
        # A late joiner replaying the room sees exactly two messages.
        late = Conn.open(src)
        try:
            joined = late.join(room, since=0)
            assert joined["last_seq"] == 2 and joined["recovered"] is True, joined
            replay = late.messages(room, 2)
            assert [(r["seq"], r["client_id"]) for r in replay] == [(1, "idem-1"), (2, "idem-2")]
        finally:
            late.close()
    finally:
        first.close()
        reader.close()


def test_a_different_sender_with_the_same_client_id_is_a_different_message():
    room = uniq("dedupe2")
    a, b = Conn.open(0), Conn.open(1)
    try:
        a.join(room)
        b.join(room)
        _, ack_a = a.say(room, "mine", client_id="shared-key")
        _, ack_b = b.say(room, "mine", client_id="shared-key")
        assert ack_a["id"] != ack_b["id"]
        msgs = a.messages(room, 2)
        assert sorted(m["seq"] for m in msgs) == [1, 2]
    finally:
        a.close()
        b.close()


def test_client_frame_schema_matches_what_the_suite_sends():
    """Sanity check of the suite itself: every well-formed frame it sends is
    checked against client-frame.json before it goes out (client.py)."""
    from client import CLIENT_VALIDATOR
    good = [
        {"type": "join", "ref": "r", "room": "x"},
        {"type": "join", "ref": "r", "room": "x", "since": 3, "epoch": 1},
        {"type": "leave", "ref": "r", "room": "x"},
        {"type": "send", "ref": "r", "room": "x", "client_id": "c", "body": "b"},
        {"type": "typing", "ref": "r", "room": "x"},
        {"type": "ping", "ref": "r"},
    ]
    bad = [
        {"type": "ping"},
        {"type": "ping", "ref": "r", "extra": 1},
        {"type": "join", "ref": "r", "room": "x", "since": -1},
        {"type": "send", "ref": "r", "room": "x", "body": "b"},
    ]
    assert all(CLIENT_VALIDATOR.is_valid(f) for f in good)
    assert not any(CLIENT_VALIDATOR.is_valid(f) for f in bad)
    json.dumps(good)


@pytest.mark.parametrize("src,dst", CROSS)
def test_history_pages_back_newest_first_without_joining(src, dst):
    room = uniq("hist")
    alice = Conn.open(src)
    bob = Conn.open(dst)
    try:
        alice.join(room)
        acks = [alice.say(room, f"m{i}", client_id=f"h{i}")[1] for i in range(5)]
        alice.messages(room, 5)
        ref = bob.request("history", room=room, limit=2)
        page = bob.reply(ref)
        assert set(page) == {"type", "ref", "room", "epoch", "messages", "has_more"}, page
        assert page["type"] == "history" and page["room"] == room and page["has_more"] is True, page
        assert [m["seq"] for m in page["messages"]] == [5, 4]
        assert [m["id"] for m in page["messages"]] == [acks[4]["id"], acks[3]["id"]]
        assert set(page["messages"][0]) == {"room", "seq", "id", "client_id", "sender", "sender_name", "body",
                                            "sent_at"}, page
        ref = bob.request("history", room=room, before_seq=4)
        rest = bob.reply(ref)
        assert [m["seq"] for m in rest["messages"]] == [3, 2, 1] and rest["has_more"] is False, rest
        # Asking is not joining: sending there is still not_joined.
        ref, _ = bob.say(room, wait=False)
        bob.expect_error(ref, "not_joined")
        ref = bob.request("history", room=room, limit=0)
        bob.expect_error(ref, "invalid_frame")
    finally:
        alice.close()
        bob.close()


@pytest.mark.parametrize("src,dst", CROSS)
def test_read_positions_move_forward_and_reach_the_room_and_the_reader_s_other_connections(src, dst):
    room = uniq("read")
    alice = Conn.open(src)
    bob = Conn.open(dst)
    bob_phone = Conn.open(src, bob.user)
    conns = [alice, bob, bob_phone]
    try:
        for conn in conns:
            conn.join(room)
        for i in range(3):
            alice.say(room, f"r{i}")
        for conn in conns:
            conn.messages(room, 3)

        def read_frame(conn: Conn) -> dict:
            return conn.expect(lambda f: f["type"] == "read" and f["room"] == room, 10, f"read in {room}")

        bob.send_json({"type": "read", "ref": new_ref("r"), "room": room, "seq": 2})
        for conn in conns:
            assert read_frame(conn) == {"type": "read", "room": room, "user": bob.user, "seq": 2}
        # Backwards changes nothing; forward again (within the second) comes
        # as one position, the highest.
        bob.send_json({"type": "read", "ref": new_ref("r"), "room": room, "seq": 1})
        bob.send_json({"type": "read", "ref": new_ref("r"), "room": room, "seq": 3})
        for conn in conns:
            assert read_frame(conn)["seq"] == 3
        alice.say(room, "r3")
        # Stored once it comes back.
        assert [m["seq"] for m in alice.messages(room, 1)] == [4]
        late = Conn.open(dst, bob.user)
        conns.append(late)
        joined = late.join(room)
        assert (joined["last_seq"], joined["read_seq"], joined["unread"]) == (4, 3, 1), joined
        # Only in a room the connection is in.
        ref = new_ref("r")
        alice.send_json({"type": "read", "ref": ref, "room": uniq("elsewhere"), "seq": 1})
        alice.expect_error(ref, "not_joined")
    finally:
        for conn in conns:
            conn.close()
