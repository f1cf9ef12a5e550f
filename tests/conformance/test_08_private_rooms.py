"""`forbidden`: the user may not read or write the room (private rooms).

Private rooms have no client or admin API yet: today they exist only as rows
in SQL. So this file, and only this file, reaches past the protocol and
writes those rows itself, into the database the runner created for this run
(SB_CONFORMANCE_SQLITE for the embedded target, with Python's stdlib sqlite3;
SB_CONFORMANCE_DATABASE_URL for the cluster target, with the psql CLI). The
rows are the ones the migrations define (core/migrations/0001_init.sql):
`rooms (id, kind = 'private', epoch, last_seq, created_at)` and
`room_members (room, user_id)`. Replace this with the admin API once one exists.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import time

import pytest

from client import DATABASE_URL, EDGES, LEDGER, SQLITE_PATH, Conn, Session, new_ref, uniq

EDGE_IDS = list(range(len(EDGES)))
ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

pytestmark = pytest.mark.skipif(not (SQLITE_PATH or DATABASE_URL),
                                reason="no database to create a private room in (see test_98)")


def _sql(statements: list[tuple[str, tuple]]) -> None:
    if SQLITE_PATH:
        db = sqlite3.connect(SQLITE_PATH, timeout=30)
        try:
            db.execute("PRAGMA busy_timeout = 30000")
            with db:
                for sql, args in statements:
                    db.execute(sql.replace("$", "?"), args)  # $1 -> ?1: numbered parameters
        finally:
            db.close()
        return
    script = ["BEGIN;"]
    for sql, args in statements:
        for i, arg in enumerate(args, 1):
            value = str(arg) if isinstance(arg, int) else "'" + str(arg).replace("'", "''") + "'"
            sql = sql.replace(f"${i}", value)
        script.append(sql + ";")
    script.append("COMMIT;")
    subprocess.run(["psql", DATABASE_URL, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", "\n".join(script)],
                   check=True, capture_output=True, timeout=30)


def create_private_room(room: str, members: list[str]) -> None:
    assert ID.match(room) and all(ID.match(m) for m in members)
    statements = [("INSERT INTO rooms (id, kind, epoch, last_seq, created_at) VALUES ($1, 'private', 1, 0, $2)",
                   (room, int(time.time() * 1000)))]
    statements += [("INSERT INTO room_members (room, user_id) VALUES ($1, $2)", (room, m)) for m in members]
    _sql(statements)


def remove_member(room: str, user: str) -> None:
    _sql([("DELETE FROM room_members WHERE room = $1 AND user_id = $2", (room, user))])


@pytest.mark.parametrize("edge", EDGE_IDS)
def test_private_room_refuses_non_members_with_forbidden(edge):
    room = uniq("staff")
    member_user = uniq("member")
    create_private_room(room, [member_user])
    outsider = Conn.open(edge)
    member = Conn.open(1 - edge, member_user)
    try:
        ref = new_ref("j")
        outsider.send_json({"type": "join", "ref": ref, "room": room})
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
        remove_member(room, alice_user)
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
    Session.note(f"note: forbidden exercised with a private room written directly into SQL ({how}); no admin API yet")
