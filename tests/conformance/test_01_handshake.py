"""PROTOCOL.md "Connecting": tokens, origins, the per-user cap, welcome."""

from __future__ import annotations

import secrets
import time

import pytest

from client import (ALLOWED_ORIGIN, EDGE_IDS, MAX_CONNECTIONS_PER_USER, MAX_ID_BYTES, TOKEN_LEEWAY_S, Conn,
                    assert_refused, handshake, http_get, mint, open_refused, uniq)



@pytest.mark.parametrize("edge", EDGE_IDS)
def test_welcome_is_the_first_frame_and_announces_limits(edge):
    user = uniq("welcome")
    conn = Conn.open(edge, user)
    try:
        w = conn.welcome
        assert set(w) == {"type", "node", "user", "protocol", "limits"}, w
        assert w["protocol"] == 1
        assert w["user"] == user
        assert isinstance(w["node"], str) and w["node"]
        limits = w["limits"]
        for key in ("max_frame_bytes", "max_body_bytes", "rate_per_second", "rate_burst", "max_replay"):
            assert isinstance(limits[key], int) and limits[key] > 0, (key, limits)
        assert limits["max_body_bytes"] < limits["max_frame_bytes"], limits
        assert limits["rate_burst"] >= 1
    finally:
        conn.close()


def test_limits_are_the_documented_defaults():
    """The runner starts the servers with default settings, so welcome must
    announce the defaults PROTOCOL.md documents."""
    conn = Conn.open(0)
    try:
        limits = conn.limits
        assert limits["max_frame_bytes"] == 16 * 1024, limits
        assert limits["max_body_bytes"] == 4 * 1024, limits
        assert limits["rate_per_second"] == 20, limits
        assert limits["rate_burst"] == 40, limits
    finally:
        conn.close()


def test_the_two_edges_are_two_nodes():
    a, b = Conn.open(0), Conn.open(1)
    try:
        assert a.node != b.node, (a.node, b.node)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("edge", EDGE_IDS)
def test_token_in_the_authorization_header(edge):
    user = uniq("bearer")
    conn = Conn.open(edge, user, bearer=True)
    try:
        assert conn.welcome["user"] == user
        conn.ping()
    finally:
        conn.close()


def _bad_tokens():
    now = int(time.time())
    user = uniq("bad")
    wrong_key = secrets.token_hex(24)
    return {
        "missing": None,
        "garbage": "not-a-jwt",
        "garbage-three-parts": "aaaa.bbbb.cccc",
        "wrong-key": mint(user, key=wrong_key),
        "unsigned-alg-none": mint(user, algorithm="none"),
        "expired-beyond-leeway": mint(user, exp_in=-(TOKEN_LEEWAY_S + 25)),
        "nbf-beyond-leeway": mint(user, nbf_in=TOKEN_LEEWAY_S + 25),
        "no-exp": mint(user, exp_in=None),
        "no-sub": mint(None),
        "sub-empty": mint(""),
        "sub-non-ascii": mint("josé"),
        "sub-too-long": mint("u" * (MAX_ID_BYTES + 1)),
        "sub-with-space": mint("a b"),
        "sub-not-a-string": mint(12345),
    }


BAD_TOKEN_CASES = list(_bad_tokens())


@pytest.mark.parametrize("edge", EDGE_IDS)
@pytest.mark.parametrize("case", BAD_TOKEN_CASES)
def test_bad_tokens_are_refused_with_401(edge, case):
    token = _bad_tokens()[case]
    result = handshake(edge, token=token)
    assert_refused(result, 401, "unauthorized")


@pytest.mark.parametrize("edge", EDGE_IDS)
def test_bad_bearer_token_is_refused_with_401(edge):
    result = handshake(edge, headers={"Authorization": f"Bearer {mint(uniq('u'), key=secrets.token_hex(24))}"})
    assert_refused(result, 401, "unauthorized")


@pytest.mark.parametrize("edge", EDGE_IDS)
def test_longest_valid_user_id_is_accepted(edge):
    user = (uniq("long") + "-" + "u" * MAX_ID_BYTES)[:MAX_ID_BYTES]
    conn = Conn.open(edge, user)
    try:
        assert conn.welcome["user"] == user
    finally:
        conn.close()


@pytest.mark.parametrize("edge", EDGE_IDS)
def test_expiry_and_nbf_within_the_leeway_are_accepted(edge):
    user = uniq("leeway")
    late = Conn.open(edge, user, token=mint(user, exp_in=-2))
    early = Conn.open(edge, user, token=mint(user, nbf_in=2))
    try:
        late.ping()
        early.ping()
    finally:
        late.close()
        early.close()


def test_token_is_checked_only_at_the_handshake():
    """A connection whose token expires stays open; reconnecting with the
    same token is refused."""
    user = uniq("expiring")
    token = mint(user, exp_in=-(TOKEN_LEEWAY_S - 2))  # accepted now, beyond the leeway in 2 s
    conn = Conn.open(0, user, token=token)
    try:
        time.sleep(3.5)
        conn.ping()
        assert_refused(handshake(0, token=token), 401, "unauthorized")
        conn.ping()
    finally:
        conn.close()


@pytest.mark.parametrize("edge", EDGE_IDS)
@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://conformance.example",
                                    "https://conformance.example.evil"])
def test_origin_not_allowed_is_refused_with_403(edge, origin):
    result = handshake(edge, token=mint(uniq("origin")), origin=origin)
    assert_refused(result, 403, "origin_not_allowed")


@pytest.mark.parametrize("edge", EDGE_IDS)
def test_allowed_origin_and_no_origin_are_accepted(edge):
    assert ALLOWED_ORIGIN, "SB_CONFORMANCE_ALLOWED_ORIGIN must name the origin the servers allow"
    with_origin = Conn.open(edge, origin=ALLOWED_ORIGIN)
    without = Conn.open(edge)
    try:
        with_origin.ping()
        without.ping()
    finally:
        with_origin.close()
        without.close()


def test_too_many_connections_of_one_user_on_one_node_is_429():
    user = uniq("many")
    conns = []
    try:
        for _ in range(MAX_CONNECTIONS_PER_USER):
            conns.append(Conn.open(0, user))
        assert_refused(handshake(0, token=mint(user)), 429, "too_many_connections")
        status, body = open_refused(0, user=user)
        assert status == 429, (status, body)
        # The cap is per node: the same user may still connect to the other one.
        other = Conn.open(1, user)
        other.ping()
        other.close()
        # Closing one frees a slot (the server may need a moment to notice).
        conns.pop().close()
        deadline = time.monotonic() + 10
        while True:
            result = handshake(0, token=mint(user))
            if result.status == 101:
                break
            assert_refused(result, 429, "too_many_connections")
            assert time.monotonic() < deadline, "a closed connection did not free its slot within 10 s"
            time.sleep(0.2)
    finally:
        for conn in conns:
            conn.close()


@pytest.mark.parametrize("edge", EDGE_IDS)
@pytest.mark.parametrize("path", ["/dev/token?user=mallory&name=Mallory", "/"])
def test_dev_mode_is_off_with_a_real_secret(edge, path):
    status, _ = http_get(edge, path)
    assert status == 404, f"GET {path} on edge {edge} answered {status}; dev mode must be off with a real secret"
