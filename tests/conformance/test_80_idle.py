"""PROTOCOL.md "Limits": 60 s of silence (pong included) closes with 4001.

The connections were opened when the session started (conftest.IdleWatch),
so this waits only for whatever part of the minute the tests before it did
not already use."""

from __future__ import annotations

import time

from client import IDLE_TIMEOUT_S, SERVER_PING_INTERVAL_S, Session


def test_silent_connection_is_closed_with_4001(idle_watch):
    idle_watch.wait(max(0.0, idle_watch.opened + IDLE_TIMEOUT_S + 45 - time.monotonic()))
    for i, raw in enumerate(idle_watch.silent):
        result = idle_watch.results.get(i)
        assert result is not None, f"{raw.label}: still open {time.monotonic() - raw.started:.0f}s after opening"
        assert "error" not in result, f"{raw.label}: {result['error']} after {result['elapsed']:.1f}s"
        Session.note(f"note: {raw.label}: Close {result['code']} after {result['elapsed']:.1f}s, "
                     f"{result['pings']} server pings unanswered")
        assert result["code"] == 4001, f"{raw.label}: expected Close 4001, got {result['code']} {result['reason']!r}"
        # Measured from before the upgrade request, so never shorter than the server's own clock.
        assert result["elapsed"] >= IDLE_TIMEOUT_S, f"{raw.label}: closed after {result['elapsed']:.1f}s"
        assert result["elapsed"] <= IDLE_TIMEOUT_S + 25, f"{raw.label}: closed only after {result['elapsed']:.1f}s"
        assert result["pings"] >= IDLE_TIMEOUT_S // SERVER_PING_INTERVAL_S - 1, (
            f"{raw.label}: {result['pings']} server pings in {result['elapsed']:.0f}s (every 20 s documented)")
        assert result["frames"] == [], result["frames"]


def test_a_connection_that_only_answers_pings_stays_open(idle_watch):
    time.sleep(max(0.0, idle_watch.opened + IDLE_TIMEOUT_S + 5 - time.monotonic()))
    for conn in idle_watch.ponging:
        conn.ping()  # raises Closed if the server closed it
