"""The server is still alive and serving after everything above."""

from __future__ import annotations

import pytest

from client import Conn, uniq


@pytest.mark.parametrize("src,dst", [(0, 1), (1, 0)])
def test_server_is_alive_and_messages_cross_edges(src, dst):
    room = uniq("alive")
    a, b = Conn.open(src), Conn.open(dst)
    try:
        a.join(room)
        b.join(room)
        _, ack = a.say(room, "still there?")
        (m,) = b.messages(room, 1)
        assert (m["seq"], m["id"], m["sender"]) == (1, ack["id"], a.user)
        _, ack = b.say(room, "yes")
        (m,) = a.messages(room, 2)[1:]
        assert (m["seq"], m["id"], m["sender"]) == (2, ack["id"], b.user)
    finally:
        a.close()
        b.close()
