"""Small helpers for run.sh (standard library only, so they run before the
suite's virtualenv exists).

    python3 tools.py hex N                    N random bytes as 2N hex digits
    python3 tools.py free-port                a free loopback port
    python3 tools.py free-port-pair           a port P such that P and P+1 are free
    python3 tools.py wait-http --pid PID --path /healthz --timeout 60 HOST:PORT...
                                              until each answers 200 (fails early if PID exits)
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import secrets
import socket
import sys
import time


def free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# Ports below the kernel's ephemeral range (32768-60999 on Linux): a port it
# hands out for bind(0) may go to an outgoing connection before the server
# binds it; ports below the range are only ever taken by listeners.
LOW, HIGH = 20000, 32000


def free_port() -> int:
    for _ in range(200):
        port = random.randrange(LOW, HIGH)
        if free(port):
            return port
    raise SystemExit("no free port found")


def free_port_pair() -> int:
    for _ in range(200):
        port = random.randrange(LOW, HIGH - 1)
        if free(port) and free(port + 1):
            return port
    raise SystemExit("no two consecutive free ports found")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def status(addr: str, path: str) -> int | None:
    host, _, port = addr.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def wait_http(addrs: list[str], path: str, timeout: float, pid: int | None) -> None:
    deadline = time.monotonic() + timeout
    for addr in addrs:
        while True:
            if pid is not None and not alive(pid):
                raise SystemExit(f"process {pid} exited before {addr}{path} answered")
            if status(addr, path) == 200:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{addr}{path} did not answer 200 within {timeout:.0f}s")
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("hex")
    h.add_argument("n", type=int)
    sub.add_parser("free-port")
    sub.add_parser("free-port-pair")
    w = sub.add_parser("wait-http")
    w.add_argument("--pid", type=int)
    w.add_argument("--path", default="/healthz")
    w.add_argument("--timeout", type=float, default=60)
    w.add_argument("addrs", nargs="+")
    args = parser.parse_args()
    if args.cmd == "hex":
        print(secrets.token_hex(args.n))
    elif args.cmd == "free-port":
        print(free_port())
    elif args.cmd == "free-port-pair":
        print(free_port_pair())
    else:
        wait_http(args.addrs, args.path, args.timeout, args.pid)


if __name__ == "__main__":
    sys.exit(main())
