"""PROTOCOL.md "Presence": a `join` with `presence: true` gets `present` in
`joined` and then `presence {room, joined, left}` changes; a user is in a
room while any of their connections, on any edge, has joined it (two tabs
are one user); a connection that did not ask is told nothing.

The waits below are a few presence intervals (500 ms by default): the
protocol lets `present` lag by a moment and changes settle within an
interval or two."""

from __future__ import annotations

import time

from client import Conn, uniq

SETTLE_S = 10


class View:
    """Who is in the room as one connection sees it: `present`, then each
    `presence` frame applied as set changes."""

    def __init__(self, conn: Conn, room: str, joined: dict):
        assert "present" in joined, f"{conn}: join with presence: true answered without present: {joined}"
        present = joined["present"]
        assert present == sorted(present) and len(set(present)) == len(present), \
            f"{conn}: present must be sorted and name each user once: {present}"
        assert conn.user in present, f"{conn}: present must name the joining user: {present}"
        self.conn, self.room, self.users = conn, room, set(present)
        self.frames: list[dict] = []

    def _take(self, timeout: float) -> dict | None:
        try:
            return self.conn.expect(lambda f: f["type"] == "presence" and f["room"] == self.room,
                                    timeout, "presence frame")
        except AssertionError:
            return None

    def _apply(self, frame: dict) -> None:
        assert not set(frame["joined"]) & set(frame["left"]), f"{self.conn}: a user both joined and left: {frame}"
        self.frames.append(frame)
        self.users |= set(frame["joined"])
        self.users -= set(frame["left"])

    def until(self, users: set[str], timeout: float = SETTLE_S) -> None:
        deadline = time.monotonic() + timeout
        while self.users != users:
            remaining = deadline - time.monotonic()
            frame = self._take(remaining) if remaining > 0 else None
            if frame is None:
                raise AssertionError(f"{self.conn}: sees {sorted(self.users)} after {timeout}s, "
                                     f"not {sorted(users)} (presence frames: {self.frames})")
            self._apply(frame)

    def stays(self, users: set[str], seconds: float) -> None:
        """Every presence frame within `seconds` leaves the view at `users`."""
        assert self.users == users, (sorted(self.users), sorted(users))
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            frame = self._take(remaining)
            if frame is None:
                return
            self._apply(frame)
            assert self.users == users, f"{self.conn}: {frame} moved the view off {sorted(users)}"


def test_presence_across_two_edges_counts_a_user_with_two_tabs_once():
    room = uniq("presence")
    alice = Conn.open(0)
    bob = Conn.open(1)
    bob_tab = None
    quiet = Conn.open(1)
    try:
        alice_view = View(alice, room, alice.join(room, presence=True))
        assert alice_view.users == {alice.user}, "a new room holds only the joining user"
        bob_view = View(bob, room, bob.join(room, presence=True))
        both = {alice.user, bob.user}
        alice_view.until(both)
        bob_view.until(both)

        quiet_joined = quiet.join(room)
        assert "present" not in quiet_joined, f"present without presence: true: {quiet_joined}"
        everyone = both | {quiet.user}
        alice_view.until(everyone)
        bob_view.until(everyone)

        # Bob's second tab on the other edge: still one user, nobody is told.
        bob_tab = Conn.open(0, user=bob.user, label=f"{bob.user}-tab@edge0")
        View(bob_tab, room, bob_tab.join(room, presence=True))
        alice_view.stays(everyone, 2)
        # Bob's first tab goes: his second keeps him in.
        bob.close()
        alice_view.stays(everyone, 2)
        # His last tab goes: he is in a `left` on both edges.
        bob_tab.close()
        alice_view.until({alice.user, quiet.user})

        frames = quiet.drain(1)
        told = [f for f in frames if f["type"] == "presence"]
        assert not told, f"{quiet}: presence frames without presence: true: {told}"
    finally:
        for conn in (alice, bob, bob_tab, quiet):
            if conn is not None:
                conn.close()
