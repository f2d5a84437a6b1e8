"""``rprocctl status | stats | trace | wait | create-endpoint | destroy-endpoint``: over the control socket.

Every command prints for people by default and the control socket's
``result`` object with ``--json`` (schema: docs/control.md).  Every failure is
one line on stderr (``rprocctl CMD: what went wrong``) and exit status 1.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..client import Control, ControlError, EndpointClosed, EndpointNotFound
from ..names import safe_name

Command = Callable[[argparse.Namespace], int]


class Failure(Exception):
    """A command failed; the message is the one line the user sees."""


def guarded(fn: Command) -> Command:
    """Turn every expected failure into one line on stderr and exit status 1."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (Failure, ControlError, EndpointNotFound, EndpointClosed, PermissionError, FileNotFoundError) as e:
            msg = e.strerror if isinstance(e, OSError) and e.strerror and e.errno else str(e)
            print(f"rprocctl {args.command}: {msg}", file=sys.stderr)
            return 1
        except TimeoutError as e:
            print(f"rprocctl {args.command}: {e or 'timed out'}", file=sys.stderr)
            return 1
        except (ConnectionError, OSError) as e:
            print(f"rprocctl {args.command}: {e.strerror or e}", file=sys.stderr)
            return 1

    return run


def control(args: argparse.Namespace) -> Control:
    return Control(args.runtime_dir)


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def hexaddr(v: int | None) -> str:
    return "-" if v is None else f"{v:#x}"


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON (schema: docs/control.md)")


# -- status ------------------------------------------------------------------------


def _status_lines(r: dict[str, Any]) -> list[str]:
    out = [f"{r['name']}: {r['state']} ({r['detail']})"]
    out.append(f"  attaches {r['attach_count']}, sessions lost {r['sessions_lost']}, up {r['uptime']:.1f} s")
    t = r["table"]
    out.append(f"  resource table {t['pa']:#x} (region {t['region']:#x} + offset {t['offset']:#x})")
    f = r.get("features")
    if f is not None:
        out.append(f"  features {f['value']:#x} ({', '.join(f['names']) or 'none'})")
    for ring in r.get("rings", []):
        out.append(
            f"  vring{ring['index']} {ring['pa']:#x} num {ring['num']} align {ring['align']} "
            f"notifyid {ring['notifyid']} {ring['direction']}, {ring['inflight']} in flight"
        )
    b = r["buffers"]
    line = f"  buffers {b['pa']:#x} size {b['size']:#x}"
    if b.get("count") is not None:
        line += f": {b['count']} x {b['buf_size']} B, {b['tx_free']}/{b['tx_total']} transmit buffers free"
    out.append(line)
    out.append(f"  endpoints {r['endpoints']}")
    return out


@guarded
def cmd_status(args: argparse.Namespace) -> int:
    with control(args) as c:
        result = c.request("status", remote=args.remote)
    if args.json:
        print_json(result)
        return 0
    for r in result["remotes"]:
        print("\n".join(_status_lines(r)))
    return 0


# -- stats ---------------------------------------------------------------------------


def _flatten(prefix: str, obj: Any, out: list[str]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            name = v.get("name") if isinstance(v, dict) else None
            _flatten(f"{prefix}[{name or i}]", v, out)
    else:
        out.append(f"{prefix} {obj}")


@guarded
def cmd_stats(args: argparse.Namespace) -> int:
    with control(args) as c:
        result = c.request("stats", remote=args.remote)
    if args.json:
        print_json(result)
        return 0
    for r in result["remotes"]:
        lines: list[str] = []
        _flatten("", {k: v for k, v in r.items() if k != "name"}, lines)
        print(f"{r['name']}:")
        for line in lines:
            print(f"  {line}")
    return 0


# -- trace ---------------------------------------------------------------------------


@guarded
def cmd_trace(args: argparse.Namespace) -> int:
    out = sys.stdout
    with control(args) as c:
        result = c.request("trace", remote=args.remote, follow=args.follow or None)
        if args.json:
            out.write(json.dumps(result) + "\n")
        else:
            out.write(result["text"])
        out.flush()
        if not args.follow:
            return 0
        for ev in c.events():
            if ev.get("event") != "trace":
                continue
            if args.json:
                out.write(json.dumps({"remote": ev["remote"], "text": ev["text"]}) + "\n")
            else:
                out.write(ev["text"])
            out.flush()
    return 0


# -- wait ----------------------------------------------------------------------------

WAIT_POLL = 0.1  # seconds between looks at the endpoint folder (no request, so nothing in the daemon's log)
WAIT_ASK_MAX = 2.0  # at most this long between questions to the daemon while its answer is "not yet"


def _wait_once(args: argparse.Namespace, epts: list[str]) -> tuple[str | None, bool]:
    """(why not yet, or None when ready; whether the daemon was asked)."""
    folder = Path(args.runtime_dir) / args.remote / "ept"
    absent = [e for e in epts if not (folder / safe_name(e)).is_socket()]
    if absent:  # the sockets come first; asking the daemon before that would only fill its log
        return f"no endpoint {', '.join(absent)} on {args.remote}", False
    try:
        with Control(args.runtime_dir, timeout=5) as c:
            [st] = c.status(args.remote)
            if not st["attached"]:
                return f"{args.remote} is not attached ({st['detail']})", True
            have = {e["name"] for e in c.endpoints(args.remote)}
    except FileNotFoundError as e:  # not started yet, or gone: keep waiting
        return e.strerror or str(e), True
    except ControlError as e:
        if e.code == "no-such-remote":
            raise Failure(str(e)) from None  # waiting will not help
        return str(e), True
    missing = [e for e in epts if e not in have]
    if missing:  # stale socket files of a daemon that died
        return f"no endpoint {', '.join(missing)} on {args.remote}", True
    return None, True


@guarded
def cmd_wait(args: argparse.Namespace) -> int:
    """Exit 0 once the remote is attached and every ``--endpoint`` exists; 1 with one line at the timeout."""
    if args.timeout < 0:
        raise Failure("--timeout must be >= 0 (0 waits forever)")
    deadline = time.monotonic() + args.timeout if args.timeout else None
    ask_delay, next_ask, last = WAIT_POLL, 0.0, ""
    while True:
        now = time.monotonic()
        if now >= next_ask:
            why, asked = _wait_once(args, args.endpoint)
            if why is None:
                return 0
            if asked:
                next_ask, ask_delay = now + ask_delay, min(ask_delay * 2, WAIT_ASK_MAX)
            last = why
        if deadline is not None and now >= deadline:
            raise Failure(f"{last}; gave up after {args.timeout:g} s")
        time.sleep(WAIT_POLL if deadline is None else max(0.0, min(WAIT_POLL, deadline - now)))


# -- host-side endpoints ---------------------------------------------------------------


def _addr(text: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an address (decimal or 0x...)") from None
    if not 0 <= v <= 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(f"{text} is not a 32-bit address")
    return v


@guarded
def cmd_create(args: argparse.Namespace) -> int:
    with control(args) as c:
        ep = c.create_endpoint(args.name, remote=args.remote, announce=args.announce, dst=args.dst)
    if args.json:
        print_json(ep)
        return 0
    sock = ep.get("exports", {}).get("socket", {}).get("path", "(no socket)")
    print(
        f"created {ep['name']}: local {hexaddr(ep['local'])}, remote {hexaddr(ep['remote'])}"
        f"{', announced' if ep['announced'] else ''}; socket {sock}"
    )
    return 0


@guarded
def cmd_destroy(args: argparse.Namespace) -> int:
    with control(args) as c:
        result = c.request("destroy-endpoint", remote=args.remote, name=args.name)
    if args.json:
        print_json(result)
    else:
        print(f"destroyed {args.name}")
    return 0


@guarded
def cmd_power(args: argparse.Namespace) -> int:
    with control(args) as c:
        result = c.request("lifecycle", remote=args.remote, action=args.command)
    if args.json:
        print_json(result)
    else:
        print(f"{args.remote}: {args.command} done ({result['state']})")
    return 0


# -- registration ----------------------------------------------------------------------


def _parser(sub: argparse._SubParsersAction, name: str, help: str, example: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help,
        description=help[0].upper() + help[1:] + ".",
        epilog=f"example: {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_json(p)
    return p


def register(sub: argparse._SubParsersAction) -> None:
    p = _parser(sub, "status", "show each remote's state, features, rings and buffers", "rprocctl status --json")
    p.set_defaults(func=cmd_status)

    p = _parser(sub, "stats", "show the daemon's counters for each remote", "rprocctl stats --json")
    p.set_defaults(func=cmd_stats)

    p = _parser(sub, "trace", "print the remote's trace buffer (Zephyr RAM console)", "rprocctl trace -f")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing what the remote adds")
    p.set_defaults(func=cmd_trace)

    p = _parser(
        sub,
        "wait",
        "wait until the remote is attached and the named endpoints exist (for ExecStartPre= of client units)",
        "rprocctl wait --endpoint rpmsg-tty --timeout 60",
    )
    p.add_argument(
        "--endpoint",
        "-e",
        action="append",
        default=[],
        metavar="EPT",
        help="an endpoint that must exist (repeatable)",
    )
    p.add_argument("--timeout", type=float, default=30.0, metavar="S", help="give up after S seconds (0: never)")
    p.set_defaults(func=cmd_wait)

    p = _parser(
        sub,
        "create-endpoint",
        "create a host-side endpoint (like RPMSG_CREATE_DEV_IOCTL); it gets a socket like any other",
        "rprocctl create-endpoint my-ept --announce",
    )
    p.add_argument("name", help="endpoint name (1..31 bytes)")
    p.add_argument("--announce", action="store_true", help="announce it to the remote by name service")
    p.add_argument("--dst", type=_addr, help="the remote address to send to (default: learnt from its first message)")
    p.set_defaults(func=cmd_create)

    p = _parser(sub, "destroy-endpoint", "destroy a host-side endpoint", "rprocctl destroy-endpoint my-ept")
    p.add_argument("name")
    p.set_defaults(func=cmd_destroy)

    for action, what in (
        ("start", "boot the remote core (needs [remote.NAME.lifecycle])"),
        ("stop", "end the session and hold the remote core in reset"),
        ("restart", "end the session, reset the remote core and boot it again"),
    ):
        p = _parser(sub, action, what, f"rprocctl --remote main {action}")
        p.set_defaults(func=cmd_power)
