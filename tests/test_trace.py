"""TraceReader against the RAM-console format, written by the simulated remote's own console."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rprocd.control import ControlServer
from rprocd.memory import MemoryMap, span_over
from rprocd.sim.console import RamConsole
from rprocd.trace import TraceReader


class Buf:
    """A trace buffer with a RAM console writing into it, as the remote's memory would hold it."""

    def __init__(self, size: int):
        self.mem = bytearray(size)
        self.console = RamConsole(span_over(self.mem))

    def write(self, text: str) -> None:
        self.console.write(text)

    def snap(self) -> bytes:
        return bytes(self.mem)


def test_lines_before_the_first_wrap() -> None:
    b = Buf(64)
    r = TraceReader()
    assert r.feed(b.snap()) == []
    b.write("boot\nhal")
    assert r.feed(b.snap()) == ["boot"]
    assert r.pending == "hal"
    b.write("f a line\n")
    assert r.feed(b.snap()) == ["half a line"]
    assert r.feed(b.snap()) == []
    assert r.position == len("boot\nhalf a line\n")


def test_backlog_reported_or_skipped() -> None:
    b = Buf(64)
    b.write("one\ntwo\nthr")
    assert TraceReader().feed(b.snap()) == ["one", "two"]
    r = TraceReader(backlog=False)
    assert r.feed(b.snap()) == []
    b.write("ee\n")
    assert r.feed(b.snap()) == ["three"]  # the unfinished line is completed, not cut


def test_wraps_many_times_nothing_lost() -> None:
    b = Buf(120)
    r = TraceReader()
    got: list[str] = []
    want = [f"line {i} " + "x" * (i % 17) for i in range(500)]
    for i, line in enumerate(want):
        b.write(line + "\n")
        if i % 2:  # two lines (at most 50 characters) between snapshots
            got += r.feed(b.snap())
    got += r.feed(b.snap())
    assert got == want


def test_identical_rewrite_is_delayed_not_lost() -> None:
    # "ab\n" * k over a buffer of 9 characters: every snapshot looks the same once wrapped
    b = Buf(10)
    r = TraceReader()
    got = r.feed(b.snap())
    for _ in range(3):
        b.write("ab\n")
    got += r.feed(b.snap())
    b.write("ab\n")  # overwrites "ab\n" with "ab\n": invisible
    got += r.feed(b.snap())
    assert got == ["ab"] * 3
    b.write("cd\n")  # its "\n" overwrites a "\n": seen with the next write
    got += r.feed(b.snap())
    assert got == ["ab"] * 4
    assert r.pending == "cd"
    b.write("e")
    got += r.feed(b.snap())
    assert got == ["ab"] * 4 + ["cd"]


def test_started_on_a_wrapped_buffer() -> None:
    b = Buf(32)
    for i in range(20):
        b.write(f"old {i}\n")
    r = TraceReader()
    assert r.feed(b.snap()) == []  # cannot know where it starts
    assert r.position is None
    b.write("new 1\nnew 2\n")
    assert r.feed(b.snap()) == ["new 1", "new 2"]
    b.write("new 3\n")
    assert r.feed(b.snap()) == ["new 3"]


def test_started_wrapped_mid_line_drops_the_partial_first_line() -> None:
    b = Buf(32)
    for i in range(20):
        b.write(f"old {i}\n")
    b.write("half")
    r = TraceReader()
    assert r.feed(b.snap()) == []
    b.write(" done\nnext\n")
    assert r.feed(b.snap()) == ["next"]  # " done" alone would be half a line


def test_remote_restart_clears_and_starts_over() -> None:
    b = Buf(64)
    r = TraceReader()
    b.write("session 1\nunfinished")
    assert r.feed(b.snap()) == ["session 1"]
    b.console.clear()
    b.write("boot\n")
    assert r.feed(b.snap()) == ["unfinished", "boot"]
    assert r.restarts == 1


def test_restart_after_wrap() -> None:
    b = Buf(17)
    r = TraceReader()
    for i in range(10):
        b.write(f"l{i}\n")
        assert r.feed(b.snap()) == [f"l{i}"]
    b.console.clear()
    b.write("again\n")
    assert r.feed(b.snap()) == ["again"]


def test_undecodable_bytes_crlf_and_long_lines() -> None:
    mem = bytearray(64)
    mem[:10] = b"ok\r\n\xff\xfeab\n\0"
    r = TraceReader(max_line=8)
    assert r.feed(bytes(mem)) == ["ok", "\ufffd\ufffdab"]
    mem[9:30] = b"0123456789abcdefghij\0"
    assert r.feed(bytes(mem)) == ["01234567", "89abcdef"]  # held no longer than max_line
    mem[29:31] = b"\n\0"
    assert r.feed(bytes(mem)) == ["ghij"]


def test_size_change_resets() -> None:
    r = TraceReader()
    assert r.feed(b"a\n\0\0") == ["a"]
    assert r.feed(b"b\n\0\0\0\0") == ["b"]
    assert r.feed(b"") == []


@settings(max_examples=300, deadline=None)
@given(size=st.integers(8, 80), data=st.data())
def test_random_bursts_reassemble_exactly(size: int, data: st.DataObject) -> None:
    """Bursts shorter than the buffer come out exactly (lines + pending), whatever they hold.

    Exact as long as no character lands on an identical one (those are only
    seen with the next burst, see test_identical_rewrite_is_delayed_not_lost):
    the writer here changes such a character to another one.
    """
    b = Buf(size)
    r = TraceReader()
    lines = r.feed(b.snap())
    written = []
    n = size - 1
    for _ in range(data.draw(st.integers(0, 40))):
        burst = data.draw(st.text("abc \n", min_size=1, max_size=n - 1))
        for c in burst:
            old = chr(b.mem[b.console.pos])
            if c == old:
                c = "x" if c != "x" else "y"
            b.write(c)
            written.append(c)
        lines += r.feed(b.snap())
    assert "\n".join([*lines, r.pending]) == "".join(written)


@settings(max_examples=300, deadline=None)
@given(size=st.integers(8, 80), data=st.data())
def test_random_joining_a_wrapped_buffer(size: int, data: st.DataObject) -> None:
    """Joining a wrapped buffer: from the first change on, exact, minus a partial first line."""
    b = Buf(size)
    n = size - 1
    b.write(data.draw(st.text("abc \n", min_size=n, max_size=3 * n)))
    r = TraceReader()
    assert r.feed(b.snap()) == []
    before = chr(b.mem[(b.console.pos - 1) % n])
    lines: list[str] = []
    post = []
    for _ in range(data.draw(st.integers(1, 20))):
        for c in data.draw(st.text("abc \n", min_size=1, max_size=n - 1)):
            if c == chr(b.mem[b.console.pos]):
                c = "x" if c != "x" else "y"
            b.write(c)
            post.append(c)
        lines += r.feed(b.snap())
    text = "".join(post)
    if before != "\n":
        cut = text.find("\n")
        text = text[cut + 1 :] if cut >= 0 else ""
    assert "\n".join([*lines, r.pending]) == text


# -- what the buffer holds now, oldest to newest (rprocctl trace) --------------------------------


def _held(written: str, size: int) -> list[str]:
    """The complete lines a wrapped buffer of ``size`` holds after ``written``: the last ``size - 1``
    characters, less the first line (cut by the wrap), the unfinished last line included."""
    text = written[-(size - 1) :]
    text = text[text.index("\n") + 1 :]
    lines = text.split("\n")
    if not lines[-1]:
        lines.pop()
    return lines


def test_contents_before_a_wrap_are_the_text_so_far() -> None:
    b = Buf(64)
    b.write("boot\nhalf")
    r = TraceReader()
    assert r.contents(b.snap()) == ["boot", "half"]
    assert r.contents(b.snap(), unfinished=False) == ["boot"]


def test_contents_after_wraps_run_oldest_to_newest() -> None:
    b = Buf(100)
    r = TraceReader()
    written = ""
    for i in range(60):  # about 8 wraps, looked at every few lines: the position is always known
        line = f"line {i} " + "y" * (i % 7) + "\n"
        b.write(line)
        written += line
        if i % 3 == 0:
            r.feed(b.snap())
    want = _held(written, 100)
    assert r.contents(b.snap()) == want
    assert want[-1] == "line 59 yyy" and want[0].startswith("line 5")
    b.write("TAIL")  # an unfinished last line is the newest (capitals: none lands on an identical character)
    assert r.contents(b.snap())[-1] == "TAIL"
    assert r.contents(b.snap(), unfinished=False)[-1] == "line 59 yyy"


def test_contents_of_a_buffer_first_seen_wrapped_once_it_changes() -> None:
    b = Buf(64)
    written = ""
    for i in range(30):
        b.write(f"old {i}\n")
        written += f"old {i}\n"
    r = TraceReader()
    r.feed(b.snap())
    assert r.position is None  # no pointer: where the oldest character is cannot be known yet
    b.write("new\n")
    written += "new\n"
    assert r.contents(b.snap()) == _held(written, 64)
    assert r.position == b.console.pos


@settings(max_examples=200, deadline=None)
@given(size=st.integers(16, 120), data=st.data())
def test_random_contents_after_wraps(size: int, data: st.DataObject) -> None:
    """Exact, looked at between bursts shorter than the buffer (no character lands on an identical one:
    that one would be seen only with the next burst, see test_identical_rewrite_is_delayed_not_lost)."""
    b = Buf(size)
    r = TraceReader()
    written = ""
    for _ in range(data.draw(st.integers(1, 30))):
        for c in data.draw(st.text("ab \n", min_size=1, max_size=size - 2)):
            if c == chr(b.mem[b.console.pos]):
                c = "x" if c != "x" else "y"
            b.write(c)
            written += c
        r.feed(b.snap())
    got = r.contents(b.snap())
    if len(written) < size - 1:  # not wrapped (full is as good as wrapped: no NUL left)
        lines = written.split("\n")
        assert got == (lines[:-1] if not lines[-1] else lines)
    elif "\n" in written[-(size - 1) :]:
        assert got == _held(written, size)
    else:
        assert got == []


# -- through the control socket: a fresh request after the buffer wrapped ---------------------------

PA = 0x1000


def _host(mem: bytearray) -> Any:
    """What the control socket reads of a remote for ``trace``: its memory and its table's trace entry."""
    traces = [SimpleNamespace(da=PA, len=len(mem))]
    return SimpleNamespace(
        name="main",
        mem=MemoryMap([(PA, mem)]),
        session=SimpleNamespace(view=SimpleNamespace(table=SimpleNamespace(traces=traces))),
    )


async def _trace(path: Path) -> dict[str, Any]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(json.dumps({"v": 1, "id": 1, "cmd": "trace"}).encode() + b"\n")
    line = await reader.readline()
    writer.close()
    reply: dict[str, Any] = json.loads(line)
    assert reply["ok"], reply
    result: dict[str, Any] = reply["result"]
    return result


def _text(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def test_rprocctl_trace_prints_the_wrapped_buffer_oldest_to_newest(tmp_path: Path) -> None:
    size = 256
    mem = bytearray(size)
    con = RamConsole(span_over(mem))
    written = "*** Booting ***\nrpmsg: attached\n"
    con.write(written)

    def log(n: int, tag: str) -> None:
        nonlocal written
        for i in range(n):
            line = f"{tag} {i:03d} " + "z" * (i % 5) + "." * 10 + "\n"  # 12 lines: past the end, less than a lap
            con.write(line)
            written += line

    async def run() -> None:
        nonlocal written
        server = ControlServer(tmp_path / "control", [_host(mem)])
        await server.start()  # its first look: not wrapped yet, so the write position is exact
        try:
            log(12, "a")  # past the end: wrapped
            r = await _trace(tmp_path / "control")
            assert r["text"] == _text(_held(written, size)) and r["position"] == con.pos
            log(12, "b")  # wraps again; the first request followed it
            con.write("unfinished")
            written += "unfinished"
            r = await _trace(tmp_path / "control")
            assert r["text"] == _text(_held(written, size))
            assert r["text"].endswith("b 011 z..........\nunfinished\n")
        finally:
            await server.stop()

        # a daemon that first sees the buffer already wrapped: a line written while it watches shows the position
        server = ControlServer(tmp_path / "control", [_host(mem)])
        await server.start()
        try:

            async def late() -> None:
                nonlocal written
                await asyncio.sleep(0.1)
                con.write("\nlate line\n")
                written += "\nlate line\n"

            task = asyncio.ensure_future(late())
            r = await _trace(tmp_path / "control")
            await task
            assert r["text"] == _text(_held(written, size)) and r["position"] == con.pos
            assert r["text"].endswith("b 011 z..........\nunfinished\nlate line\n")
        finally:
            await server.stop()

        # and one that sees it wrapped and quiet: no way to know the oldest character; whole lines all the same
        server = ControlServer(tmp_path / "control", [_host(mem)])
        await server.start()
        try:
            r = await _trace(tmp_path / "control")
            assert r["position"] is None
            got = r["text"].splitlines()
            real = set(written.splitlines())
            assert len(got) > 5 and sum(line not in real for line in got) <= 1  # at most the one the position cut
            i = got.index("late line")  # in order, round the buffer
            assert got[i - 2 : i + 1] == ["b 011 z..........", "unfinished", "late line"]
        finally:
            await server.stop()

    asyncio.run(run())
