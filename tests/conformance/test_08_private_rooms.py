"""`forbidden`: the user may not read or write the room (private rooms).

Private rooms are made with the admin API (README, "Rooms"): `POST /v1/rooms`
with a token carrying `admin: true`, answered 202 once Kafka holds the
command; the persister applies it a moment later. To know when, and for the
one case the protocol cannot set up, this file reaches past the protocol
into the database the runner created for this run (SB_CONFORMANCE_SQLITE for
the embedded target, with Python's stdlib sqlite3; SB_CONFORMANCE_DATABASE_URL
for the cluster target, with the psql CLI): it reads `room_commands` to see
the command applied, and it deletes a `room_members` row behind the
servers' back, so that an edge accepts a send that the persister then
refuses. (Removing the member through the admin API takes the member's
connections out of the room at once, so the edge itself would refuse.)
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import time
import urllib.request

import pytest

from client import DATABASE_URL, EDGE_IDS, EDGES, LEDGER, SQLITE_PATH, Conn, Session, mint, uniq

ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

pytestmark = pytest.mark.skipif(not (SQLITE_PATH or DATABASE_URL),
                                reason="no database to create a private room in (see test_98)")


def _sql(sql: str, args: tuple) -> list[tuple]:
    """Runs one statement on the run's database; its rows."""
    if SQLITE_PATH:
        db = sqlite3.connect(SQLITE_PATH, timeout=30)
        try:
            db.execute("PRAGMA busy_timeout = 30000")
            with db:
                return db.execute(sql.replace("$", "?"), args).fetchall()  # $1 -> ?1: numbered parameters
        finally:
            db.close()
    for i, arg in enumerate(args, 1):
        sql = sql.replace(f"${i}", "'" + str(arg).replace("'", "''") + "'")
    out = subprocess.run(["psql", DATABASE_URL, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
                         check=True, capture_output=True, text=True, timeout=30)
    return [tuple(line.split("|")) for line in out.stdout.splitlines() if line]


def create_private_room(room: str, members: list[str]) -> None:
    """Through the admin API; returns once the persister has applied it."""
    assert ID.match(room) and all(ID.match(m) for m in members)
    host, port = EDGES[0]
    request = urllib.request.Request(
        f"http://{host}:{port}/v1/rooms", method="POST",
        data=json.dumps({"room": room, "kind": "private", "members": members}).encode(),
        headers={"Content-Type": "application/json",
                 "Authorization": "Bearer " + mint("conformance-admin", extra={"admin": True})})
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert reply.status == 202, reply.status
        command = json.loads(reply.read())
    deadline = time.monotonic() + 30
    while not _sql("SELECT 1 FROM room_commands WHERE id = $1", (command["id"],)):
        assert time.monotonic() < deadline, f"room command {command} not applied within 30 s"
        time.sleep(0.05)


def remove_member_behind_the_servers_back(room: str, user: str) -> None:
    _sql("DELETE FROM room_members WHERE room = $1 AND user_id = $2", (room, user))


@pytest.mark.parametrize("edge", EDGE_IDS)
def test_private_room_refuses_non_members_with_forbidden(edge):
    room = uniq("staff")
    member_user = uniq("member")
    create_private_room(room, [member_user])
    outsider = Conn.open(edge)
    member = Conn.open(1 - edge, member_user)
    try:
        ref = outsider.request("join", room=room)
        outsider.expect_error(ref, "forbidden")
        ref, _ = outsider.say(room, "let me in", wait=False)
        outsider.expect_error(ref, "not_joined")
        member.join(room)
        _, ack = member.say(room, "members only")
        (m,) = member.messages(room, 1)
        assert (m["seq"], m["id"]) == (1, ack["id"])
        assert [f for f in outsider.drain(0.5) if f["type"] == "message"] == []
        outsider.ping()
    finally:
        outsider.close()
        member.close()


def test_a_send_acked_and_then_refused_by_the_persister_comes_back_as_an_error():
    """PROTOCOL.md: a send can be acked and later refused by the persister
    (membership revoked); the refusal arrives as an error with its ref."""
    room = uniq("board")
    alice_user, bob_user = uniq("alice"), uniq("bob")
    create_private_room(room, [alice_user, bob_user])
    alice = Conn.open(0, alice_user)
    bob = Conn.open(1, bob_user)
    try:
        alice.join(room)
        bob.join(room)
        remove_member_behind_the_servers_back(room, alice_user)
        ref, _ = alice.say(room, "am I still in?", wait=False)
        first = alice.reply(ref, timeout=15)
        assert first["type"] == "ack", first
        err = alice.expect(lambda f: f["type"] == "error" and f.get("ref") == ref, 15, "the persister's refusal")
        assert err["code"] == "forbidden", err
        assert LEDGER.state(ref) == "acked+refused"
        # Not stored: bob (still a member) gets nothing, and the room is empty.
        _, ack = bob.say(room, "still here")
        (m,) = bob.messages(room, 1)
        assert (m["seq"], m["id"]) == (1, ack["id"]), m
    finally:
        alice.close()
        bob.close()


def test_record_how_forbidden_was_exercised():
    how = f"sqlite3 on {SQLITE_PATH}" if SQLITE_PATH else "psql on the run's PostgreSQL database"
    Session.note(f"note: forbidden exercised with private rooms made through the admin API; a member removed "
                 f"straight in SQL ({how}) for the acked-then-refused case")
