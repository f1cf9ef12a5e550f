"""Every send of the session is accounted for, and every server frame was valid."""

from __future__ import annotations

from client import LEDGER, Session


def test_every_send_is_accounted_for():
    entries = LEDGER.snapshot()
    by_state: dict[str, list[dict]] = {}
    for e in entries:
        by_state.setdefault(e["state"], []).append(e)
    Session.note("note: send ledger: " + ", ".join(f"{k} {len(v)}" for k, v in sorted(by_state.items())))
    lost = by_state.get("pending", [])
    assert not lost, "lost sends (neither ack nor error): " + ", ".join(
        f"{e['client_id']!r} in {e['room']} ({e['source']}, ref {e['ref']})" for e in lost)
    problems = [e for e in entries if e.get("problems")]
    assert not problems, "sends with contradictory replies: " + "; ".join(
        f"{e['client_id']!r}: {e['problems']}" for e in problems)
    assert entries, "the suite made no sends"


def test_every_server_frame_matched_the_schema():
    assert Session.frames_checked > 0
    assert Session.violations == [], "\n".join(Session.violations)
