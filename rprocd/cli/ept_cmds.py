"""``rprocctl endpoints | send | listen``: the remote's endpoints from a shell.

``endpoints`` asks the control socket (addresses, clients, counters); without
a daemon to answer it fails (exit 1) rather than list sockets that may be dead.  ``send``
and ``listen`` use the endpoint sockets themselves, through
:mod:`rprocd.client`, exactly as any other program would.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..client import MAX_PAYLOAD, Control, Endpoint, EndpointClosed
from .ctl_cmds import Failure, add_json, guarded, hexaddr, print_json


def ept_dir(args: argparse.Namespace) -> Path:
    return Path(args.runtime_dir) / args.remote / "ept"


def open_endpoint(args: argparse.Namespace, name: str) -> Endpoint:
    try:
        return Endpoint.open(name, remote=args.remote, runtime_dir=args.runtime_dir)
    except FileNotFoundError:
        raise Failure(f"no endpoint {name!r} on {args.remote} (see 'rprocctl endpoints')") from None


# -- endpoints ------------------------------------------------------------------------


@guarded
def cmd_endpoints(args: argparse.Namespace) -> int:
    # No fallback to listing socket files: with the daemon gone (or SIGKILLed, leaving its sockets
    # behind) they may be dead; not reaching the daemon is a failure, exit 1, like every command.
    with Control(args.runtime_dir) as c:
        eps = c.endpoints(args.remote)
    if args.json:
        print_json({"endpoints": eps})
        return 0
    if not eps:
        print(f"no endpoints on {args.remote}")
        return 0
    # names come from the remote: show them escaped, as their socket files are named
    width = max(len(e["escaped"]) for e in eps)
    print(f"{'NAME':<{width}}  {'LOCAL':>6}  {'REMOTE':>6}  CLIENTS  {'RX':>8}  {'TX':>8}  EXPORTS")
    for e in eps:
        exports = ",".join(e["exports"]) + (" (host)" if e["host_created"] else "")
        print(
            f"{e['escaped']:<{width}}  {hexaddr(e['local']):>6}  {hexaddr(e['remote']):>6}  {e['clients']:>7}  "
            f"{e['rx_msgs']:>8}  {e['tx_msgs']:>8}  {exports}"
        )
    return 0


# -- send / listen ---------------------------------------------------------------------


def format_record(data: bytes, fmt: str) -> bytes:
    if fmt == "raw":
        return data
    if fmt == "hex":
        return data.hex(" ").encode() + b"\n"
    return data.decode("utf-8", "backslashreplace").encode() + b"\n"


def record_json(endpoint: str, data: bytes) -> dict[str, Any]:
    return {"endpoint": endpoint, "len": len(data), "hex": data.hex(), "text": data.decode("utf-8", "backslashreplace")}


@guarded
def cmd_send(args: argparse.Namespace) -> int:
    if args.data == "-":
        stdin = sys.stdin.buffer
        payloads = [line.rstrip(b"\n") for line in stdin] if args.lines else [stdin.read()]
    elif args.hex:
        try:
            payloads = [bytes.fromhex(args.data)]
        except ValueError:
            raise Failure(f"{args.data!r} is not hex") from None
    else:
        payloads = [args.data.encode()]
    for p in payloads:
        if len(p) > MAX_PAYLOAD:
            raise Failure(f"message of {len(p)} bytes exceeds {MAX_PAYLOAD}")
    replies: list[bytes] = []
    out = sys.stdout.buffer
    with open_endpoint(args, args.endpoint) as ept:
        for p in payloads:
            ept.send(p, timeout=args.timeout)
        for _ in range(args.replies):
            try:
                data = ept.recv(timeout=args.timeout)
            except TimeoutError:
                raise Failure(f"no reply within {args.timeout} s") from None
            if args.json:
                replies.append(data)
            else:
                out.write(format_record(data, args.format))
                out.flush()
    if args.json:
        print_json(
            {
                "endpoint": args.endpoint,
                "sent": [len(p) for p in payloads],
                "replies": [record_json(args.endpoint, r) for r in replies],
            }
        )
    return 0


@guarded
def cmd_listen(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer
    with open_endpoint(args, args.endpoint) as ept:
        n = 0
        while args.count <= 0 or n < args.count:
            try:
                data = ept.recv(timeout=args.timeout)
            except EndpointClosed:
                return 0  # the endpoint went away
            except TimeoutError:
                raise Failure(f"nothing received within {args.timeout} s") from None
            if args.json:
                out.write(json.dumps(record_json(args.endpoint, data)).encode() + b"\n")
            else:
                out.write(format_record(data, args.format))
            out.flush()
            n += 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "endpoints",
        help="list the remote's endpoints: addresses, clients, counters",
        description="List the remote's endpoints with their local and remote addresses, clients and counters.",
        epilog="example: rprocctl endpoints --json",
        formatter_class=fmt,
    )
    add_json(p)
    p.set_defaults(func=cmd_endpoints)

    p = sub.add_parser(
        "send",
        help="send messages to an endpoint and print the replies",
        description="Send one message (DATA, or standard input with -) to an endpoint; print N replies.",
        epilog="example: rprocctl send rpmsg-client-sample hello --replies 1\n"
        "         printf 'a\\nb\\n' | rprocctl send rpmsg-tty - --lines --replies 2",
        formatter_class=fmt,
    )
    p.add_argument("endpoint")
    p.add_argument("data", help="the payload (text), or - to read it from standard input")
    p.add_argument("--hex", action="store_true", help="DATA is hex")
    p.add_argument("--lines", action="store_true", help="with -, send each input line as one message")
    p.add_argument("--replies", type=int, default=0, metavar="N", help="wait for and print N replies")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each reply (default 5)")
    p.add_argument("--format", choices=("text", "hex", "raw"), default="text", help="how to print replies")
    add_json(p)
    p.set_defaults(func=cmd_send)

    p = sub.add_parser(
        "listen",
        help="print what the remote sends on an endpoint",
        description="Print each message the remote sends on an endpoint, until it goes away.",
        epilog="example: rprocctl listen rpmsg-tty --format hex --count 10",
        formatter_class=fmt,
    )
    p.add_argument("endpoint")
    p.add_argument("--format", choices=("text", "hex", "raw"), default="text", help="text, hex or raw bytes")
    p.add_argument("--count", type=int, default=0, metavar="N", help="stop after N messages (0: never)")
    p.add_argument("--timeout", type=float, default=None, help="fail if nothing arrives for this many seconds")
    add_json(p)
    p.set_defaults(func=cmd_listen)
