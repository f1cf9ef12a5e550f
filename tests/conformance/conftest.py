"""Fixtures of the conformance suite. Run it with tests/conformance/run.sh,
which starts the servers and sets SB_CONFORMANCE_* (see client.py)."""

from __future__ import annotations

import threading
import time

import pytest

import client
from client import EDGES, IDLE_TIMEOUT_S, LEDGER, SECRET, Conn, RawWs, Session, uniq


def pytest_configure(config):
    if len(EDGES) < 2 or not SECRET:
        raise pytest.UsageError(
            "SB_CONFORMANCE_EDGES (two host:port) and SB_CONFORMANCE_SECRET must be set; "
            "run tests/conformance/run.sh embedded|cluster")


def pytest_collection_modifyitems(session, config, items):
    # Files are numbered in the order they must run (the drain test stops the
    # server; the ledger test comes last); keep that order whatever -k picks.
    items.sort(key=lambda item: item.fspath.basename)


class IdleWatch:
    """Opened when the session starts, so the 60 s idle timeout runs while
    the other tests do: on each edge one raw connection that sends nothing
    and never answers the server's pings (it must get Close 4001), and one
    library connection that sends nothing but answers pings on its own (it
    must stay open: a pong counts as activity)."""

    def __init__(self):
        self.silent = [RawWs(edge, label=f"silent@edge{edge}") for edge in range(len(EDGES))]
        self.ponging = [Conn.open(edge, label=f"ponging@edge{edge}") for edge in range(len(EDGES))]
        self.opened = time.monotonic()
        self.results: dict[int, dict] = {}
        self.threads = []
        for i, raw in enumerate(self.silent):
            t = threading.Thread(target=self._watch, args=(i, raw), daemon=True, name=f"idle-{i}")
            t.start()
            self.threads.append(t)

    def _watch(self, i: int, raw: RawWs) -> None:
        result: dict = {}
        try:
            code, frames = raw.read_until_close(IDLE_TIMEOUT_S + 45)
            result.update(code=code, reason=raw.close_reason, frames=frames, pings=raw.pings,
                          elapsed=time.monotonic() - raw.started)
            raw.reply_close()
        except BaseException as e:  # recorded; the idle test reports it
            result.update(error=repr(e), pings=raw.pings, elapsed=time.monotonic() - raw.started)
        finally:
            raw.close()
            self.results[i] = result

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        for raw in self.silent:
            raw.close()
        for conn in self.ponging:
            try:
                conn.ws.close()
            except Exception:
                pass


@pytest.fixture(scope="session", autouse=True)
def idle_watch():
    watch = IdleWatch()
    yield watch
    watch.close()


@pytest.fixture(scope="session", autouse=True)
def warmed_up(idle_watch):
    """A message that crosses both edges before the tests start: the
    persister and router have joined their consumer groups and deliver."""
    room = uniq("warmup")
    a = Conn.open(0, label="warmup@edge0")
    b = Conn.open(1, label="warmup@edge1")
    try:
        a.join(room, timeout=60)
        b.join(room, timeout=60)
        a.say(room, "warm-up 1", timeout=60)
        b.messages(room, 1, timeout=90)
        b.say(room, "warm-up 2", timeout=60)
        a.messages(room, 2, timeout=90)
    finally:
        a.close()
        b.close()
    return True


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    tr = terminalreporter
    tr.section("conformance summary")
    tr.write_line(f"target: {client.TARGET}; edges: {', '.join(f'{h}:{p}' for h, p in EDGES)}")
    by_type = ", ".join(f"{k}={v}" for k, v in sorted(Session.frames_by_type.items(), key=lambda kv: str(kv[0])))
    tr.write_line(f"server frames validated against server-frame.json: {Session.frames_checked} ({by_type})")
    tr.write_line(f"schema violations: {len(Session.violations)}")
    for v in Session.violations[:20]:
        tr.write_line(f"  {v}")
    tr.write_line("error codes received: " + ", ".join(f"{k}={v}" for k, v in sorted(Session.error_codes_seen.items())))
    tr.write_line("close codes received: " + ", ".join(f"{k}={v}" for k, v in sorted(
        Session.close_codes_seen.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))))
    tr.write_line("handshake statuses: " + ", ".join(f"{k}={v}" for k, v in sorted(Session.handshake_statuses_seen.items())))
    states: dict[str, int] = {}
    for entry in LEDGER.snapshot():
        states[entry["state"]] = states.get(entry["state"], 0) + 1
    tr.write_line("send ledger: " + ", ".join(f"{k}={v}" for k, v in sorted(states.items())))
    for note in Session.notes:
        tr.write_line(note)
    # One plain line for CI logs, whatever pytest's own summary looks like.
    counts = {kind: len(tr.stats.get(kind, [])) for kind in ("passed", "failed", "error", "skipped")}
    tr.write_line(
        f"conformance: {counts['passed']} passed, {counts['failed'] + counts['error']} failed, {counts['skipped']} skipped"
    )
