"""PROTOCOL.md "Close codes" 1002, 1007 and 1009, on a hand-written
WebSocket (a library would refuse to send these frames)."""

from __future__ import annotations

import json

import pytest

from client import EDGE_IDS, OP_PING, OP_TEXT, RawWs, encode_frame

PING = json.dumps({"type": "ping", "ref": "raw"}).encode()


def _expect_close(raw: RawWs, code: int, timeout: float = 10) -> list[dict]:
    try:
        got, frames = raw.read_until_close(timeout)
    except ConnectionError as e:
        raise AssertionError(f"{raw.label}: expected Close {code}, but {e}") from None
    assert got == code, f"{raw.label}: expected Close {code}, got Close {got} ({raw.close_reason!r})"
    raw.reply_close()
    return frames


@pytest.mark.parametrize("edge", EDGE_IDS)
@pytest.mark.parametrize("violation", ["unmasked", "reserved-bits", "reserved-opcode", "fragmented-control-frame"])
def test_protocol_violation_closes_with_1002(edge, violation):
    raw = RawWs(edge)
    try:
        # A valid frame first: the connection works.
        raw.send_frame(OP_TEXT, PING)
        kind, frame = raw.recv_frame(10)
        assert (kind, frame) == ("text", {"type": "pong", "ref": "raw"})
        if violation == "unmasked":
            raw.send_raw(encode_frame(OP_TEXT, PING, mask=False))
        elif violation == "reserved-bits":
            raw.send_raw(encode_frame(OP_TEXT, PING, rsv=0b100))
        elif violation == "reserved-opcode":
            raw.send_raw(encode_frame(0x3, PING))
        else:
            raw.send_raw(encode_frame(OP_PING, b"x", fin=False))
        frames = _expect_close(raw, 1002)
        assert [f for f in frames if f.get("ref") == "raw"] == [], "the bad frame must not be processed"
    finally:
        raw.close()


@pytest.mark.parametrize("edge", EDGE_IDS)
def test_invalid_utf8_in_a_text_frame_closes_with_1007(edge):
    raw = RawWs(edge)
    try:
        raw.send_frame(OP_TEXT, b'{"type":"ping","ref":"\xff\xfe\xfd"}')
        frames = _expect_close(raw, 1007)
        assert frames == [], frames
    finally:
        raw.close()


def _padded_ping(ref: str, size: int) -> bytes:
    """A valid ping frame padded with JSON whitespace to exactly `size` bytes."""
    core = json.dumps({"type": "ping", "ref": ref}).encode()
    return core[:-1] + b" " * (size - len(core)) + b"}"


@pytest.mark.parametrize("edge", EDGE_IDS)
def test_frame_of_exactly_max_frame_bytes_is_accepted(edge):
    raw = RawWs(edge)
    try:
        size = raw.welcome["limits"]["max_frame_bytes"]
        payload = _padded_ping("exact", size)
        assert len(payload) == size
        raw.send_frame(OP_TEXT, payload)
        kind, frame = raw.recv_frame(10)
        assert (kind, frame) == ("text", {"type": "pong", "ref": "exact"})
    finally:
        raw.close()


@pytest.mark.parametrize("edge", EDGE_IDS)
def test_frame_over_max_frame_bytes_closes_with_1009(edge):
    raw = RawWs(edge)
    try:
        size = raw.welcome["limits"]["max_frame_bytes"] + 1
        raw.send_frame(OP_TEXT, _padded_ping("big", size))
        frames = _expect_close(raw, 1009)
        assert [f for f in frames if f.get("ref") == "big"] == []
    finally:
        raw.close()
