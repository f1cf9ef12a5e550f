"""Coverage of PROTOCOL.md by this run: every documented error code, close
code and handshake refusal was received at least once, or is listed here as
not exercised, with the reason. Runs after the drain test and needs no server.
Meaningful for a full run only (a run filtered with -k misses codes)."""

from __future__ import annotations

import re

from client import DATABASE_URL, ROOT, SERVER_SCHEMA, SQLITE_PATH, Session

PROTOCOL = (ROOT / "schemas" / "PROTOCOL.md").read_text()

# Codes a client cannot cause: server faults.
NOT_EXERCISABLE = {
    "unavailable": "a server fault (Kafka or the database could not take the request); no client input causes it. "
                   "The embedded default also answers it while its persister is over 3 MiB behind, which the suite "
                   "does not provoke on purpose",
    "internal": "an unexpected server fault; no client input is documented to cause it",
}


def _section(title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", PROTOCOL, re.S | re.M)
    assert m, f"PROTOCOL.md has no section {title!r}"
    return m.group(1)


def _first_column(section: str) -> list[str]:
    return re.findall(r"^\| `?([0-9a-z_]+)`? \|", section, re.M)


def documented_error_codes() -> list[str]:
    return [c for c in _first_column(_section("Errors")) if c != "code"]


def documented_close_codes() -> list[int]:
    return [int(c) for c in _first_column(_section("Close codes")) if c.isdigit()]


def documented_handshake_refusals() -> list[int]:
    return [int(s) for s in re.findall(r"^\| (\d{3}) \| `[a-z_]+` \|", _section("Connecting"), re.M)]


def test_the_error_codes_of_protocol_md_and_the_schema_agree():
    schema_codes = [b["const"] for b in SERVER_SCHEMA["$defs"]["ErrorCode"]["oneOf"]]
    assert sorted(documented_error_codes()) == sorted(schema_codes)


def test_every_documented_code_was_exercised_or_is_listed_as_not_exercisable():
    not_exercised = []
    missing = []
    for code in documented_error_codes():
        seen = Session.error_codes_seen.get(code, 0)
        if code in NOT_EXERCISABLE:
            if seen:
                Session.note(f"note: {code}: received {seen} time(s) during this run, though a client cannot cause it")
            else:
                not_exercised.append(f"not exercised: {code}: {NOT_EXERCISABLE[code]}")
        elif code == "forbidden" and not (SQLITE_PATH or DATABASE_URL):
            not_exercised.append("not exercised: forbidden: needs a private room, which exists only in SQL, and "
                                 "the runner gave no database (SB_CONFORMANCE_SQLITE / SB_CONFORMANCE_DATABASE_URL)")
        elif not seen:
            missing.append(f"error {code}")
    for code in documented_close_codes():
        if not Session.close_codes_seen.get(code):
            missing.append(f"close {code}")
    for status in documented_handshake_refusals():
        if not Session.handshake_statuses_seen.get(status):
            if status == 503:
                not_exercised.append("not exercised: 503 draining: no handshake landed inside the drain window "
                                     "(or the drain test did not run)")
            else:
                missing.append(f"handshake {status}")
    for line in not_exercised:
        Session.note(line)
    assert not missing, f"documented but never received in this run: {missing}"
