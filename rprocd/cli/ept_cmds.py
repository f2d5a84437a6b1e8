"""``rprocctl endpoints | send | listen``: endpoint sockets from a shell."""

from __future__ import annotations

import argparse
import select
import socket
import stat
import sys
from pathlib import Path

MAX_PAYLOAD = 496


def ept_dir(args: argparse.Namespace) -> Path:
    return Path(args.runtime_dir) / args.remote / "ept"


def connect(args: argparse.Namespace, name: str) -> socket.socket:
    path = ept_dir(args) / name
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        s.connect(str(path))
    except FileNotFoundError:
        s.close()
        raise SystemExit(f"rprocctl: no endpoint {name!r} at {path} (see 'rprocctl endpoints')") from None
    return s


def cmd_endpoints(args: argparse.Namespace) -> int:
    d = ept_dir(args)
    try:
        names = sorted(e.name for e in d.iterdir() if stat.S_ISSOCK(e.lstat().st_mode))
    except FileNotFoundError:
        names = []
    for n in names:
        print(n)
    return 0


def format_record(data: bytes, fmt: str) -> bytes:
    if fmt == "raw":
        return data
    if fmt == "hex":
        return data.hex(" ").encode() + b"\n"
    return data.decode("utf-8", "backslashreplace").encode() + b"\n"


def cmd_send(args: argparse.Namespace) -> int:
    if args.data == "-":
        payloads = [line.rstrip(b"\n") for line in sys.stdin.buffer] if args.lines else [sys.stdin.buffer.read()]
    else:
        payloads = [bytes.fromhex(args.data) if args.hex else args.data.encode()]
    for p in payloads:
        if len(p) > MAX_PAYLOAD:
            print(f"rprocctl send: message of {len(p)} bytes exceeds {MAX_PAYLOAD}", file=sys.stderr)
            return 1
    with connect(args, args.endpoint) as s:
        for p in payloads:
            s.send(p)
        out = sys.stdout.buffer
        s.settimeout(args.timeout)
        for _ in range(args.replies):
            try:
                data = s.recv(MAX_PAYLOAD + 16)
            except TimeoutError:
                print("rprocctl send: no reply within the timeout", file=sys.stderr)
                return 1
            out.write(format_record(data, args.format))
            out.flush()
    return 0


def _hung_up(s: socket.socket) -> bool:
    """After a 0-byte read: EOF, or an empty record?  Only a hung-up peer gives EOF."""
    p = select.poll()
    p.register(s.fileno(), select.POLLRDHUP)
    return bool(p.poll(0))


def cmd_listen(args: argparse.Namespace) -> int:
    with connect(args, args.endpoint) as s:
        out = sys.stdout.buffer
        n = 0
        while args.count <= 0 or n < args.count:
            data = s.recv(MAX_PAYLOAD + 16)
            if not data and _hung_up(s):
                return 0  # the endpoint went away
            out.write(format_record(data, args.format))
            out.flush()
            n += 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("endpoints", help="list the remote's endpoints", epilog="example: rprocctl endpoints")
    p.set_defaults(func=cmd_endpoints)

    p = sub.add_parser(
        "send",
        help="send one message to an endpoint",
        epilog="example: rprocctl send rpmsg-client-sample hello --replies 1",
    )
    p.add_argument("endpoint")
    p.add_argument("data", help="the payload (text), or - to read it from standard input")
    p.add_argument("--hex", action="store_true", help="DATA is hex")
    p.add_argument("--lines", action="store_true", help="with -, send each input line as one message")
    p.add_argument("--replies", type=int, default=0, help="wait for and print N replies")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each reply")
    p.add_argument("--format", choices=("text", "hex", "raw"), default="text")
    p.set_defaults(func=cmd_send)

    p = sub.add_parser(
        "listen",
        help="print what the remote sends on an endpoint",
        epilog="example: rprocctl listen rpmsg-tty --format hex",
    )
    p.add_argument("endpoint")
    p.add_argument("--format", choices=("text", "hex", "raw"), default="text")
    p.add_argument("--count", type=int, default=0, help="stop after N messages (0: never)")
    p.set_defaults(func=cmd_listen)
