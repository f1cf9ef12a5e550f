"""Shared client code of the conformance suite.

Written against schemas/PROTOCOL.md and schemas/json/*.json only. Everything
the server sends goes through `check_server_frame`, which validates it against
server-frame.json and feeds the session's send ledger; a frame that does not
validate raises `SchemaViolation` (an AssertionError) in the receiving test and
is also recorded, so the final ledger test fails even if the violation was
raised in a helper thread.

Two clients:

- `Conn`: a `websockets` (sync) connection. It answers server pings on its
  own (as the protocol expects of libraries) and paces its frames with a
  token bucket a little below the limits announced in `welcome`, so tests
  only hit `rate_limited` when they mean to (`paced=False`).
- `RawWs`: a WebSocket written by hand on a plain socket, for what a library
  refuses to do (unmasked frames, reserved bits, invalid UTF-8 in a text
  frame) and for what needs full control of reading (a client that never
  answers pings, a client that stops reading).
"""

from __future__ import annotations

import base64
import collections
import hashlib
import http.client
import itertools
import json
import os
import secrets
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import jwt
from jsonschema.validators import validator_for
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "schemas" / "json"

# ----------------------------------------------------------------------------
# Configuration (set by tests/conformance/run.sh)
# ----------------------------------------------------------------------------


def _edges() -> list[tuple[str, int]]:
    raw = os.environ.get("SB_CONFORMANCE_EDGES", "")
    edges = []
    for item in raw.replace(" ", ",").split(","):
        if item:
            host, _, port = item.rpartition(":")
            edges.append((host, int(port)))
    return edges


EDGES: list[tuple[str, int]] = _edges()
# For tests run once per edge: `@pytest.mark.parametrize("edge", EDGE_IDS)`.
EDGE_IDS: list[int] = list(range(len(EDGES)))
SECRET: str = os.environ.get("SB_CONFORMANCE_SECRET", "")
ALLOWED_ORIGIN: str = os.environ.get("SB_CONFORMANCE_ALLOWED_ORIGIN", "")
PIDS: list[int] = [int(p) for p in os.environ.get("SB_CONFORMANCE_PID", "").replace(",", " ").split() if p]
SQLITE_PATH: str = os.environ.get("SB_CONFORMANCE_SQLITE", "")
DATABASE_URL: str = os.environ.get("SB_CONFORMANCE_DATABASE_URL", "")
TARGET: str = os.environ.get("SB_CONFORMANCE_TARGET", "unknown")

# Documented defaults that `welcome.limits` does not announce (PROTOCOL.md,
# "Limits and what happens at each", "Connecting", "Ids", "Close codes").
MAX_ROOMS_PER_CONNECTION = 256
MAX_CONNECTIONS_PER_USER = 16
TOKEN_LEEWAY_S = 5
MAX_ID_BYTES = 128
MAX_REF_BYTES = 64
MAX_CLIENT_ID_BYTES = 64
MAX_NAME_BYTES = 64
IDLE_TIMEOUT_S = 60
SERVER_PING_INTERVAL_S = 20
CLOSE_TIMEOUT_S = 10
SEND_QUEUE_BYTES = 1024 * 1024
# What may already be on its way when a slow consumer's queue overflows:
# "the WebSocket write buffer (128 KiB and one frame) and the kernel's send
# buffer (64 KiB by default, which Linux doubles)".
WS_WRITE_BUFFER_BYTES = 128 * 1024
KERNEL_SEND_BUFFER_BYTES = 2 * 64 * 1024

# A run id: rooms and users of this run never collide with earlier runs
# (the cluster target's database is fresh anyway; the embedded one too).
RUN = secrets.token_hex(3)
_names = itertools.count(1)


def uniq(prefix: str) -> str:
    """A fresh id (valid room and user id syntax)."""
    return f"{prefix}-{next(_names)}-{RUN}"


_refs = itertools.count(1)


def new_ref(prefix: str = "r") -> str:
    return f"{prefix}{next(_refs)}"


# ----------------------------------------------------------------------------
# Session-wide records: frames checked, schema violations, observed codes,
# notes printed in the terminal summary.
# ----------------------------------------------------------------------------


class Session:
    lock = threading.Lock()
    frames_checked = 0
    frames_by_type: collections.Counter = collections.Counter()
    violations: list[str] = []
    error_codes_seen: collections.Counter = collections.Counter()
    close_codes_seen: collections.Counter = collections.Counter()
    handshake_statuses_seen: collections.Counter = collections.Counter()
    notes: list[str] = []

    @classmethod
    def note(cls, text: str) -> None:
        with cls.lock:
            cls.notes.append(text)
        print(text)

    @classmethod
    def saw_close(cls, code: int | None) -> None:
        with cls.lock:
            cls.close_codes_seen[code] += 1

    @classmethod
    def saw_status(cls, status: int) -> None:
        with cls.lock:
            cls.handshake_statuses_seen[status] += 1

    @classmethod
    def violation(cls, problem: str) -> "SchemaViolation":
        """Records a frame the server should not have sent; raise what it returns."""
        with cls.lock:
            cls.violations.append(problem)
        return SchemaViolation(problem)


# ----------------------------------------------------------------------------
# Schemas
# ----------------------------------------------------------------------------


def _load_schema(name: str):
    schema = json.loads((SCHEMA_DIR / name).read_text())
    cls = validator_for(schema)  # picks the validator of the schema's "$schema" draft
    assert schema.get("$schema") == "https://json-schema.org/draft/2020-12/schema", schema.get("$schema")
    assert cls.__name__ == "Draft202012Validator", cls
    cls.check_schema(schema)
    return schema, cls


SERVER_SCHEMA, _ServerValidator = _load_schema("server-frame.json")
CLIENT_SCHEMA, _ClientValidator = _load_schema("client-frame.json")
SERVER_VALIDATOR = _ServerValidator(SERVER_SCHEMA)
CLIENT_VALIDATOR = _ClientValidator(CLIENT_SCHEMA)


def _branches(schema, cls):
    """Per-`type` validators. Every `oneOf` branch of the frame schemas
    requires `type` and pins it with a distinct `const`, so a frame can only
    match the branch of its own `type`: validating against that branch (with
    the shared `$defs`) decides the `oneOf` exactly, at a fraction of the cost
    (the suite checks thousands of frames). The premise is asserted here; the
    first frames of every type are also checked with the full schema."""
    out = {}
    common = {k: v for k, v in schema.items() if k not in ("oneOf", "title", "description")}
    for branch in schema["oneOf"]:
        assert "type" in branch.get("required", []), branch
        const = branch["properties"]["type"]["const"]
        assert const not in out, f"two branches for type {const!r}"
        out[const] = cls({**common, **branch})
    return out


SERVER_BRANCHES = _branches(SERVER_SCHEMA, _ServerValidator)
CLIENT_BRANCHES = _branches(CLIENT_SCHEMA, _ClientValidator)
FULL_CHECKS_PER_TYPE = 25


class SchemaViolation(AssertionError):
    pass


def _schema_errors(validator, frame) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(frame), key=lambda e: list(e.absolute_path))
    ]


def check_server_frame(data: Any, source: str) -> dict:
    """Decodes and validates one frame the server sent; updates the ledger."""
    if not isinstance(data, str):
        problem = f"{source}: server sent a binary frame ({len(data)} bytes); v1 is text JSON only"
        raise Session.violation(problem)
    try:
        frame = json.loads(data)
    except ValueError as e:
        problem = f"{source}: server sent a text frame that is not JSON ({e}): {data[:200]!r}"
        raise Session.violation(problem) from None
    kind = frame.get("type") if isinstance(frame, dict) else None
    with Session.lock:
        Session.frames_checked += 1
        Session.frames_by_type[kind] += 1
        full = Session.frames_by_type[kind] <= FULL_CHECKS_PER_TYPE
    branch = SERVER_BRANCHES.get(kind)
    ok = branch is not None and branch.is_valid(frame)
    if full or not ok:
        full_ok = SERVER_VALIDATOR.is_valid(frame)
        if full_ok != ok:
            problem = f"{source}: per-type validation disagrees with the full schema for {frame!r}"
            raise Session.violation(problem)
    if not ok:
        problem = (
            f"{source}: frame does not match server-frame.json: {data[:300]}\n  "
            + "\n  ".join(_schema_errors(SERVER_VALIDATOR, frame)[:8])
        )
        raise Session.violation(problem)
    if kind == "error":
        with Session.lock:
            Session.error_codes_seen[frame["code"]] += 1
    LEDGER.on_frame(frame, source)
    return frame


def assert_valid_client_frame(frame: dict) -> None:
    """The suite's own well-formed frames must match client-frame.json."""
    if not CLIENT_VALIDATOR.is_valid(frame):
        raise AssertionError(f"suite bug: {frame!r} is not a valid client frame: {_schema_errors(CLIENT_VALIDATOR, frame)}")


# ----------------------------------------------------------------------------
# The send ledger
# ----------------------------------------------------------------------------


class Ledger:
    """Every `send` the suite makes, by ref (refs are unique in a session).

    States: pending -> acked | refused | acked+refused (acked, then refused by
    the persister)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.entries: dict[str, dict] = {}
        self._noref = itertools.count(1)

    def register(self, frame: dict, source: str) -> str:
        ref = frame.get("ref")
        if not (isinstance(ref, str) and len(ref.encode()) <= MAX_REF_BYTES):
            # The reply cannot carry this ref; the test resolves it by key.
            ref = f"<unreadable-ref-{next(self._noref)}>"
        with self.lock:
            assert ref not in self.entries, f"suite bug: ref {ref} reused for a send"
            self.entries[ref] = {
                "ref": ref,
                "client_id": frame.get("client_id"),
                "room": frame.get("room"),
                "source": source,
                "state": "pending",
                "code": None,
                "id": None,
                "sent": time.monotonic(),
            }
        return ref

    def on_frame(self, frame: dict, source: str) -> None:
        ref = frame.get("ref")
        if not isinstance(ref, str):
            return
        with self.lock:
            entry = self.entries.get(ref)
            if entry is None:
                return
            if frame["type"] == "ack":
                if entry["state"] == "pending":
                    entry["state"] = "acked"
                    entry["id"] = frame["id"]
                else:
                    entry.setdefault("problems", []).append(f"ack after {entry['state']}: {frame}")
            elif frame["type"] == "error":
                if entry["state"] == "pending":
                    entry["state"] = "refused"
                elif entry["state"] == "acked":
                    entry["state"] = "acked+refused"
                else:
                    entry.setdefault("problems", []).append(f"error after {entry['state']}: {frame}")
                entry["code"] = frame["code"]
            else:
                entry.setdefault("problems", []).append(f"unexpected {frame['type']} with a send's ref: {frame}")

    def resolve(self, ref: str, state: str, code: str | None = None, why: str = "") -> None:
        with self.lock:
            entry = self.entries[ref]
            assert entry["state"] == "pending", entry
            entry["state"] = state
            entry["code"] = code
            entry["why"] = why

    def state(self, ref: str) -> str:
        with self.lock:
            return self.entries[ref]["state"]

    def entry(self, ref: str) -> dict:
        with self.lock:
            return dict(self.entries[ref])

    def pending(self, refs: Iterable[str]) -> list[str]:
        with self.lock:
            return [r for r in refs if self.entries[r]["state"] == "pending"]

    def snapshot(self) -> list[dict]:
        with self.lock:
            return [dict(e) for e in self.entries.values()]


LEDGER = Ledger()

# ----------------------------------------------------------------------------
# Tokens
# ----------------------------------------------------------------------------


def mint(sub: Any = None, *, name: Any = None, exp_in: float | None = 3600, nbf_in: float | None = None,
         key: str | None = None, algorithm: str = "HS256", drop: Iterable[str] = (), extra: dict | None = None) -> str:
    """An HS256 token signed with the deployment's secret (or `key`)."""
    now = int(time.time())
    claims: dict[str, Any] = {}
    if sub is not None:
        claims["sub"] = sub
    if exp_in is not None:
        claims["exp"] = now + int(exp_in)
    if nbf_in is not None:
        claims["nbf"] = now + int(nbf_in)
    if name is not None:
        claims["name"] = name
    claims.update(extra or {})
    for k in drop:
        claims.pop(k, None)
    if algorithm == "none":
        header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=")
        body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
        return (header + b"." + body + b".").decode()
    return jwt.encode(claims, key if key is not None else SECRET, algorithm=algorithm)


# ----------------------------------------------------------------------------
# Plain HTTP (status checks of the handshake, /dev/token, ...)
# ----------------------------------------------------------------------------


def edge_addr(edge: int) -> tuple[str, int]:
    return EDGES[edge]


def http_get(edge: int, path: str, headers: dict | None = None, timeout: float = 5) -> tuple[int, bytes]:
    host, port = edge_addr(edge)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class HandshakeResult:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, sock: socket.socket | None):
        self.status = status
        self.headers = headers
        self.body = body
        self.sock = sock

    def json(self) -> dict:
        try:
            value = json.loads(self.body)
        except ValueError:
            raise AssertionError(f"handshake refusal {self.status} has a body that is not JSON: {self.body[:200]!r}")
        return value

    def __repr__(self) -> str:
        return f"<handshake {self.status} {self.body[:120]!r}>"


def _read_http_head(sock: socket.socket, deadline: float) -> tuple[int, dict[str, str], bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed during the HTTP response head: {buf[:200]!r}")
        buf += chunk
        if len(buf) > 65536:
            raise AssertionError("HTTP response head over 64 KiB")
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, rest


def _read_http_body(sock: socket.socket, headers: dict[str, str], rest: bytes, deadline: float) -> bytes:
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(rest) < n:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return rest[:n]
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = b""
        while True:
            while b"\r\n" not in rest:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    return out
                rest += chunk
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    return out + rest[:size]
                rest += chunk
            if size == 0:
                return out
            out += rest[:size]
            rest = rest[size + 2:]
    # Neither: read until the server closes (bounded by the deadline).
    while True:
        try:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(65536)
        except (socket.timeout, OSError):
            return rest
        if not chunk:
            return rest
        rest += chunk


def ws_key() -> str:
    return base64.b64encode(secrets.token_bytes(16)).decode()


def handshake(edge: int, *, token: str | None = None, origin: str | None = None, headers: dict | None = None,
              rcvbuf: int | None = None, timeout: float = 10, path: str | None = None,
              keep_open: bool = False) -> HandshakeResult:
    """A WebSocket upgrade request written by hand. Returns the status,
    headers and body; on 101 the socket stays open when `keep_open`."""
    host, port = edge_addr(edge)
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    try:
        sock.connect((host, port))
        if path is None:
            path = "/ws" + (f"?token={token}" if token is not None else "")
        key = ws_key()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if origin is not None:
            lines.append(f"Origin: {origin}")
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status, resp_headers, rest = _read_http_head(sock, deadline)
        Session.saw_status(status)
        if status == 101:
            expected = base64.b64encode(
                hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
            assert resp_headers.get("sec-websocket-accept") == expected, resp_headers
            if keep_open:
                result = HandshakeResult(101, resp_headers, rest, sock)
                return result
            sock.close()
            return HandshakeResult(101, resp_headers, rest, None)
        body = _read_http_body(sock, resp_headers, rest, deadline)
        sock.close()
        return HandshakeResult(status, resp_headers, body, None)
    except BaseException:
        sock.close()
        raise


class KeepAlive:
    """One HTTP/1.1 keep-alive connection: several requests in a row, the
    last of which may be a WebSocket upgrade."""

    def __init__(self, edge: int, timeout: float = 5):
        self.host, self.port = edge_addr(edge)
        self.sock = socket.create_connection((self.host, self.port), timeout=timeout)
        self.timeout = timeout

    def request(self, path: str, headers: dict | None = None) -> tuple[int, dict[str, str], bytes]:
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        deadline = time.monotonic() + self.timeout
        status, resp_headers, rest = _read_http_head(self.sock, deadline)
        if status == 101:
            return status, resp_headers, rest
        return status, resp_headers, _read_http_body(self.sock, resp_headers, rest, deadline)

    def upgrade(self, token: str) -> tuple[int, bytes]:
        status, _, body = self.request(f"/ws?token={token}", {
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": ws_key(),
            "Sec-WebSocket-Version": "13"})
        Session.saw_status(status)
        return status, body

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def assert_refused(result: HandshakeResult, status: int, code: str) -> None:
    assert result.status == status, f"expected {status} {code}, got {result!r}"
    assert_refusal_body(result.json(), code)


def assert_refusal_body(body: Any, code: str) -> None:
    """A handshake refusal's body: `{code, message}` (PROTOCOL.md, "Connecting")."""
    assert isinstance(body, dict) and body.get("code") == code and isinstance(body.get("message"), str), (
        f"refusal body should be {{code: {code!r}, message}}: {body!r}")


# ----------------------------------------------------------------------------
# Pacing
# ----------------------------------------------------------------------------


class Pacer:
    """Client-side token bucket a little below the server's limits, so the
    suite's ordinary frames never trip `rate_limited` by accident."""

    def __init__(self, rate_per_second: float, burst: int):
        self.rate = max(1.0, rate_per_second * 0.85)
        self.capacity = max(1.0, burst - 6)
        self.tokens = self.capacity
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> None:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens < 1:
                wait = (1 - self.tokens) / self.rate
                time.sleep(wait)
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
                self.last = now
            self.tokens -= 1

    def spend(self, n: int = 1) -> None:
        """Account for frames sent without waiting (paced=False)."""
        with self.lock:
            self.tokens -= n


# ----------------------------------------------------------------------------
# Conn: a websockets connection with the protocol's helpers
# ----------------------------------------------------------------------------


class Closed(AssertionError):
    """The connection was closed while a frame was expected."""

    def __init__(self, code: int | None, reason: str, source: str):
        super().__init__(f"{source}: connection closed (code {code}, reason {reason!r})")
        self.code = code
        self.reason = reason


class Conn:
    def __init__(self, ws, edge: int, user: str, welcome: dict, label: str):
        self.ws = ws
        self.edge = edge
        self.user = user
        self.welcome = welcome
        self.limits = welcome["limits"]
        self.node = welcome["node"]
        self.label = label
        self.backlog: collections.deque[dict] = collections.deque()
        self.sent_refs: list[str] = []
        self.pacer = Pacer(self.limits["rate_per_second"], self.limits["rate_burst"])
        self.closed_code: int | None = None

    def __repr__(self) -> str:
        return self.label

    # -- opening ---------------------------------------------------------------

    @classmethod
    def open(cls, edge: int = 0, user: str | None = None, *, name: str | None = None, token: str | None = None,
             origin: str | None = None, bearer: bool = False, label: str | None = None) -> "Conn":
        user = user or uniq("user")
        if token is None:
            token = mint(user, name=name)
        host, port = edge_addr(edge)
        uri = f"ws://{host}:{port}/ws"
        headers = {}
        if bearer:
            headers["Authorization"] = f"Bearer {token}"
        else:
            uri += f"?token={token}"
        ws = connect(
            uri,
            origin=origin,
            additional_headers=headers or None,
            compression=None,
            proxy=None,
            open_timeout=10,
            ping_interval=None,  # the library's own keepalive pings would be frames the tests did not ask for
            close_timeout=5,
            max_size=4 * 1024 * 1024,
            max_queue=8192,
            legacy=True,  # return the connection itself (websockets 17 warns unless this is explicit)
        )
        label = label or f"{user}@edge{edge}"
        Session.saw_status(101)
        try:
            raw = ws.recv(timeout=10)
        except Exception:
            ws.close()
            raise
        welcome = check_server_frame(raw, label)
        if welcome.get("type") != "welcome":
            ws.close()
            raise AssertionError(f"{label}: first frame is not welcome: {welcome}")
        return cls(ws, edge, user, welcome, label)

    # -- sending ---------------------------------------------------------------

    def send_text(self, text: str, *, paced: bool = True) -> None:
        self._send(text, paced)

    def send_binary(self, data: bytes, *, paced: bool = True) -> None:
        self._send(data, paced)

    def _send(self, payload: str | bytes, paced: bool) -> None:
        """A text (str) or binary (bytes) frame, counted against the rate."""
        if paced:
            self.pacer.take()
        else:
            self.pacer.spend()
        self.ws.send(payload)

    def request(self, kind: str, **fields: Any) -> str:
        """Sends a `kind` frame with a fresh ref and `fields`; returns the ref."""
        ref = new_ref(kind[0])
        self.send_json({"type": kind, "ref": ref, **fields})
        return ref

    def send_json(self, frame: dict, *, paced: bool = True, valid: bool = True) -> str | None:
        """Sends one JSON frame. `valid` frames are first checked against
        client-frame.json. A `send` frame is entered in the ledger; the key
        (its ref) is returned."""
        if valid:
            assert_valid_client_frame(frame)
        key = None
        if isinstance(frame, dict) and frame.get("type") == "send":
            key = LEDGER.register(frame, self.label)
            self.sent_refs.append(key)
        self.send_text(json.dumps(frame), paced=paced)
        return key

    # -- receiving -------------------------------------------------------------

    def _recv_new(self, timeout: float) -> dict:
        try:
            data = self.ws.recv(timeout=max(0.0, timeout))
        except ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd is not None else None
            reason = e.rcvd.reason if e.rcvd is not None else ""
            if self.closed_code is None:
                self.closed_code = code
                Session.saw_close(code)
            raise Closed(code, reason, self.label) from None
        return check_server_frame(data, self.label)

    def recv(self, timeout: float = 10) -> dict:
        if self.backlog:
            return self.backlog.popleft()
        try:
            return self._recv_new(timeout)
        except TimeoutError:
            raise AssertionError(f"{self.label}: no frame within {timeout}s") from None

    def expect(self, pred: Callable[[dict], bool], timeout: float = 10, what: str = "frame") -> dict:
        """The first frame (backlog first) that matches; others stay in the backlog."""
        for i, frame in enumerate(self.backlog):
            if pred(frame):
                del self.backlog[i]
                return frame
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [f"{f.get('type')}:{f.get('ref', f.get('seq', ''))}" for f in list(self.backlog)[-12:]]
                raise AssertionError(f"{self.label}: no {what} within {timeout}s (backlog tail: {seen})")
            try:
                frame = self._recv_new(remaining)
            except TimeoutError:
                continue
            if pred(frame):
                return frame
            self.backlog.append(frame)

    def reply(self, ref: str, timeout: float = 10) -> dict:
        """The reply to the frame with this ref (pong, joined, left, ack or error)."""
        return self.expect(lambda f: f.get("ref") == ref and f["type"] != "message", timeout, f"reply to {ref}")

    def expect_error(self, ref: str | None, code: str, timeout: float = 10) -> dict:
        if ref is None:
            frame = self.expect(lambda f: f["type"] == "error", timeout, f"error {code}")
            assert "ref" not in frame, f"{self.label}: error for an unreadable ref must have no ref: {frame}"
        else:
            frame = self.reply(ref, timeout)
        assert frame["type"] == "error" and frame["code"] == code, f"{self.label}: expected error {code}, got {frame}"
        assert isinstance(frame["message"], str)
        return frame

    def drain(self, seconds: float) -> list[dict]:
        """Everything that arrives within `seconds` (backlog included)."""
        out = list(self.backlog)
        self.backlog.clear()
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return out
            try:
                out.append(self._recv_new(remaining))
            except TimeoutError:
                return out

    def messages(self, room: str, n: int, timeout: float = 15) -> list[dict]:
        """The next n `message` frames of `room`, in arrival order."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{self.label}: {len(out)} of {n} messages of {room} within {timeout}s "
                    f"(seqs {[m['seq'] for m in out][-10:]})")
            out.append(self.expect(lambda f: f["type"] == "message" and f["room"] == room, remaining,
                                   f"message in {room}"))
        return out

    # -- protocol helpers ------------------------------------------------------

    def ping(self, timeout: float = 10) -> dict:
        ref = new_ref("p")
        self.send_json({"type": "ping", "ref": ref})
        pong = self.reply(ref, timeout)
        assert pong == {"type": "pong", "ref": ref}, pong
        return pong

    def join(self, room: str, since: int | None = None, epoch: int | None = None, timeout: float = 10,
             presence: bool | None = None) -> dict:
        ref = new_ref("j")
        frame: dict[str, Any] = {"type": "join", "ref": ref, "room": room}
        if since is not None:
            frame["since"] = since
        if epoch is not None:
            frame["epoch"] = epoch
        if presence is not None:
            frame["presence"] = presence
        self.send_json(frame)
        joined = self.reply(ref, timeout)
        assert joined["type"] == "joined", f"{self.label}: join {room} answered {joined}"
        assert joined["room"] == room and joined["ref"] == ref, joined
        return joined

    def join_and_replay(self, room: str, since: int, epoch: int, count: int, what: str,
                        why: str) -> tuple[dict, list[dict]]:
        """Joins with `since` and reads the `count` messages replayed. A Close
        instead fails the test, saying that `what` was answered with it, how
        far the replay had come, and `why` that is wrong."""
        got: list[dict] = []
        joined = None
        try:
            joined = self.join(room, since=since, epoch=epoch)
            while len(got) < count:
                got += self.messages(room, 1, timeout=30)
        except Closed as e:
            raise AssertionError(
                f"{what} was answered with Close {e.code} ({e.reason!r}) "
                f"{'after joined and ' if joined else 'before joined, '}after {len(got)} replayed messages: {why}"
            ) from None
        return joined, got

    def leave(self, room: str) -> dict:
        ref = self.request("leave", room=room)
        left = self.reply(ref)
        assert left == {"type": "left", "ref": ref, "room": room}, left
        return left

    def say(self, room: str, body: str | None = None, client_id: str | None = None, *, wait: bool = True,
            paced: bool = True, timeout: float = 15) -> tuple[str, dict | None]:
        """Sends a message; with `wait`, returns (ref, ack) and fails unless it is acked."""
        ref = new_ref("s")
        client_id = client_id if client_id is not None else uniq("c")
        body = body if body is not None else f"hello from {self.user} ({client_id})"
        self.send_json({"type": "send", "ref": ref, "room": room, "client_id": client_id, "body": body}, paced=paced)
        if not wait:
            return ref, None
        ack = self.reply(ref, timeout)
        assert ack["type"] == "ack", f"{self.label}: send {client_id} to {room} answered {ack}"
        assert ack["status"] == "accepted" and isinstance(ack["id"], str) and ack["id"], ack
        return ref, ack

    def wait_replies(self, refs: Iterable[str], timeout: float = 15) -> None:
        """Reads until every listed send has its ack or error (see LEDGER)."""
        refs = list(refs)
        deadline = time.monotonic() + timeout
        while LEDGER.pending(refs):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = [LEDGER.entry(r)["client_id"] for r in LEDGER.pending(refs)]
                raise AssertionError(f"{self.label}: no ack or error within {timeout}s for client_ids {missing}")
            try:
                self.backlog.append(self._recv_new(remaining))
            except TimeoutError:
                continue

    def close(self, *, flush: float = 10) -> None:
        """Waits (bounded) for the replies of this connection's sends, reads
        and validates what already arrived, then closes."""
        try:
            if LEDGER.pending(self.sent_refs):
                try:
                    self.wait_replies(self.sent_refs, timeout=flush)
                except (AssertionError, Closed):
                    pass
            try:
                self.read_ready()
            except Closed:
                pass
        finally:
            self.ws.close()

    def read_ready(self) -> None:
        """Reads (and validates) what has already arrived, without waiting."""
        while True:
            try:
                self.backlog.append(self._recv_new(0))
            except TimeoutError:
                return


def open_refused(edge: int, **kwargs) -> tuple[int, bytes]:
    """Opens a Conn that is expected to be refused; returns (status, body)."""
    try:
        conn = Conn.open(edge, **kwargs)
    except InvalidStatus as e:
        Session.saw_status(e.response.status_code)
        return e.response.status_code, e.response.body or b""
    conn.close()
    raise AssertionError(f"handshake to edge {edge} was accepted: {kwargs}")


# ----------------------------------------------------------------------------
# RawWs: a hand-written client on a plain socket
# ----------------------------------------------------------------------------

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def encode_frame(opcode: int, payload: bytes, *, mask: bool = True, fin: bool = True, rsv: int = 0) -> bytes:
    head = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    n = len(payload)
    mask_bit = 0x80 if mask else 0
    if n < 126:
        head.append(mask_bit | n)
    elif n < 65536:
        head.append(mask_bit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(mask_bit | 127)
        head += struct.pack("!Q", n)
    if not mask:
        return bytes(head) + payload
    key = secrets.token_bytes(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if n < 4096 else _mask_fast(payload, key)
    return bytes(head) + key + masked


def _mask_fast(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    full = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(full, "big")).to_bytes(n, "big")


class RawWs:
    """A WebSocket client on a plain socket. Text frames it receives are
    validated like Conn's; pings are answered only when `answer_pings`."""

    def __init__(self, edge: int = 0, user: str | None = None, *, token: str | None = None, rcvbuf: int | None = None,
                 answer_pings: bool = False, label: str | None = None, read_welcome: bool = True):
        self.edge = edge
        self.user = user or uniq("raw")
        self.label = label or f"raw:{self.user}@edge{edge}"
        self.answer_pings = answer_pings
        self.started = time.monotonic()  # before the request: the server's idle clock starts later
        result = handshake(edge, token=token if token is not None else mint(self.user), rcvbuf=rcvbuf,
                           keep_open=True)
        if result.status != 101:
            raise AssertionError(f"{self.label}: handshake refused: {result!r}")
        self.sock = result.sock
        self.buf = bytearray(result.body)
        self.bytes_received = len(self.buf)
        self.pings = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self.welcome = None
        if read_welcome:
            kind, frame = self.recv_frame(10)
            assert kind == "text" and frame["type"] == "welcome", (kind, frame)
            self.welcome = frame

    def rcvbuf(self) -> int:
        return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes, **kw) -> None:
        self.sock.sendall(encode_frame(opcode, payload, **kw))

    def send_json(self, frame: dict) -> None:
        assert_valid_client_frame(frame)
        self.send_frame(OP_TEXT, json.dumps(frame).encode())

    def _fill(self, n: int, deadline: float) -> None:
        while len(self.buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(262144)
            if not chunk:
                raise ConnectionError(f"{self.label}: TCP connection closed without a Close frame")
            self.buf += chunk
            self.bytes_received += len(chunk)

    def _take(self, n: int, deadline: float) -> bytes:
        self._fill(n, deadline)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def recv_raw_frame(self, timeout: float) -> tuple[int, bytes]:
        deadline = time.monotonic() + timeout
        b0, b1, payload = self._read_frame(deadline)
        if b1 & 0x80:
            raise AssertionError(f"{self.label}: the server sent a masked frame")
        if b0 & 0x70:
            raise AssertionError(f"{self.label}: the server set reserved bits")
        if not b0 & 0x80:
            # Fragmented message: collect the continuation frames.
            opcode = b0 & 0x0F
            parts = [payload]
            while True:
                more_b0, _, more = self._read_frame(deadline)
                if more_b0 & 0x0F in (OP_PING, OP_PONG, OP_CLOSE):
                    raise AssertionError(f"{self.label}: control frame inside a fragmented message")
                parts.append(more)
                if more_b0 & 0x80:
                    return opcode, b"".join(parts)
        return b0 & 0x0F, payload

    def _read_frame(self, deadline: float) -> tuple[int, int, bytes]:
        """One frame off the wire: its two header bytes and its payload."""
        self._fill(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        n = b1 & 0x7F
        header = 2
        if n == 126:
            self._fill(4, deadline)
            n = struct.unpack("!H", self.buf[2:4])[0]
            header = 4
        elif n == 127:
            self._fill(10, deadline)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            header = 10
        self._fill(header + n, deadline)
        payload = bytes(self.buf[header:header + n])
        del self.buf[:header + n]
        return b0, b1, payload

    def recv_frame(self, timeout: float = 10) -> tuple[str, Any]:
        """('text', dict) | ('close', (code, reason)) | ('ping', bytes) | ('pong', bytes).
        Timeout raises TimeoutError; a TCP close without a Close frame raises ConnectionError."""
        opcode, payload = self.recv_raw_frame(timeout)
        if opcode == OP_TEXT:
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                problem = f"{self.label}: server sent a text frame that is not UTF-8"
                raise Session.violation(problem)
            return "text", check_server_frame(text, self.label)
        if opcode == OP_BINARY:
            check_server_frame(payload, self.label)  # raises: binary is not part of v1
        if opcode == OP_CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            reason = payload[2:].decode("utf-8", "replace")
            self.close_code, self.close_reason = code, reason
            Session.saw_close(code)
            return "close", (code, reason)
        if opcode == OP_PING:
            self.pings += 1
            if self.answer_pings:
                self.send_frame(OP_PONG, payload)
            return "ping", payload
        if opcode == OP_PONG:
            return "pong", payload
        raise AssertionError(f"{self.label}: unknown opcode {opcode}")

    def read_until_close(self, timeout: float) -> tuple[int | None, list[dict]]:
        """Reads until a Close frame; returns (code, text frames before it)."""
        frames = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.label}: no Close frame within {timeout}s")
            kind, value = self.recv_frame(remaining)
            if kind == "text":
                frames.append(value)
            elif kind == "close":
                return value[0], frames

    def reply_close(self) -> None:
        try:
            payload = struct.pack("!H", self.close_code) if self.close_code else b""
            self.send_frame(OP_CLOSE, payload)
        except OSError:
            pass

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

