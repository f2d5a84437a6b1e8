"""Reading the remote's trace buffer (``RSC_TRACE``) as it grows (sans-I/O).

Zephyr's RAM console keeps no write pointer in shared memory: characters go
round the first ``len - 1`` bytes of the buffer and the last byte stays NUL
(shared/sim-board.md).  So a reader can only find what is new by comparing a
snapshot with the one before.  :class:`TraceReader` does that: feed it
successive snapshots (``bytes`` of the whole buffer) and it returns the new
complete lines.  It does no I/O, so the MQTT bridge and the control socket
poll the buffer their own way and share the logic.

How the write position is known:

* until the buffer first wraps, the text is followed by NULs, and the first
  NUL *is* the write position: exact;
* after a wrap there is no NUL left; from a known position the new text runs
  from there to the last byte that changed.  A character written over an
  identical one at the very end of a burst is only seen with the next burst
  (it is delayed, never lost);
* a reader that first sees an already wrapped buffer cannot know where it
  starts: it reports nothing until the buffer changes, then takes the changed
  stretch (dropping its first, possibly partial, line);
* NULs reappearing where text was, or text changing behind the write
  position while the buffer still had room, mean the remote restarted and
  cleared its buffer: the reader starts over with the new boot log.

More than ``len - 1`` characters written between two snapshots (counting
delayed ones) cannot be told from fewer: the reader then reports what the
buffer still holds.  Poll often enough for the remote's logging rate.

What the buffer holds *now*, oldest to newest (``rprocctl trace``), is
:meth:`TraceReader.contents`.  Zephyr's ``ram_console_out()``
(``drivers/console/ram_console.c``) stores ``ram_console[pos] = c`` then
``pos = (pos + 1) % CONFIG_RAM_CONSOLE_BUFFER_SIZE`` on a buffer of that
size plus one NUL, and ``pos`` lives in the remote's ``.bss``, not in the
buffer: once wrapped, the oldest character is the one at ``pos``, the newest
the one before it.  So the contents are the buffer rotated to start at the
write position, its first line dropped (the wrap cut it, or may have); the
reader must know the position (from an earlier snapshot, or a change seen
since).  When it cannot (it first saw the buffer wrapped and nothing has
changed since), the buffer is given round from its first line start in
memory: every line whole but the one the write position cuts, the order
right but for where it starts; :attr:`TraceReader.position` stays None to
say so.
"""

from __future__ import annotations

__all__ = ["TraceReader"]


def _last_difference(a: bytes, b: bytes) -> int:
    """Index of the last byte where ``a`` and ``b`` (same length) differ, -1 if equal (in C, not a Python loop)."""
    x = int.from_bytes(a, "big") ^ int.from_bytes(b, "big")
    if not x:
        return -1
    return len(a) - 1 - ((x & -x).bit_length() - 1) // 8


class TraceReader:
    """New complete lines from successive snapshots of one RAM-console buffer.

    ``backlog``: whether the text already in the buffer at the first snapshot
    (or after the remote restarted) is reported; a follower that only wants
    what comes next says False.  ``max_line``: a line that grows longer than
    this without a newline is reported in pieces, so a remote that never
    writes ``\\n`` cannot make the reader hold text forever.
    """

    def __init__(self, *, backlog: bool = True, max_line: int = 4096):
        self.backlog = backlog
        self.max_line = max_line
        self.restarts = 0  # times the buffer was seen cleared and rewritten
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next snapshot is treated as the first."""
        self._prev: bytes | None = None
        self._pos: int | None = None  # where the remote writes next, when known
        self._partial = b""  # the last line, not finished yet
        self._skip_first = False  # the next text may start mid-line: drop up to the first newline

    @property
    def position(self) -> int | None:
        """The write position (index into the buffer), or None while unknown."""
        return self._pos

    @property
    def pending(self) -> str:
        """The unfinished last line."""
        return self._partial.decode("utf-8", "replace")

    def contents(self, snapshot: bytes | bytearray | memoryview, *, unfinished: bool = True) -> list[str]:
        """Every line the buffer holds now, oldest to newest (``unfinished``: the last, unended one too).

        Feeds ``snapshot`` first, so that :meth:`feed` goes on from here: a
        follower then gets the lines written after it (and the unfinished one
        once it ends, so leave it out here for a follower).
        """
        raw = bytes(snapshot)
        if len(raw) < 2:
            return []
        self.feed(raw)
        data = raw[:-1]
        nul = data.find(0)
        if nul >= 0:  # not wrapped yet: the text runs from the start to the first NUL
            text = data[:nul]
        elif self._pos is not None:
            pos = self._pos
            text = data[pos:] + data[:pos]
            cut = text.find(b"\n")
            text = text[cut + 1 :] if cut >= 0 else b""  # the oldest line lost its start to the wrap
        else:  # position unknown: round the buffer from its first line start, so only one line can be cut
            start = data.find(b"\n") + 1
            text = data[start:] + data[:start]
        lines = text.split(b"\n")
        if not lines[-1] or not unfinished:
            lines.pop()
        return [p.decode("utf-8", "replace").rstrip("\r") for p in lines]

    def flush(self) -> list[str]:
        """The unfinished last line as a line of its own (e.g. when the session ends)."""
        if not self._partial:
            return []
        out = [self.pending]
        self._partial = b""
        return out

    # -- feeding -----------------------------------------------------------------

    def feed(self, snapshot: bytes | bytearray | memoryview) -> list[str]:
        """Take the buffer as it is now; return the lines completed since the last call."""
        raw = bytes(snapshot)
        if len(raw) < 2:
            return []
        data = raw[:-1]  # the last byte is the terminator, never text
        prev = self._prev
        if prev is None or len(prev) != len(data):
            return self._first(data, self.backlog)
        if data == prev:
            return []
        nul = data.find(0)
        pos = self._pos
        if nul >= 0:
            prev_nul = prev.find(0)
            if prev_nul < 0 or nul < prev_nul or data[:prev_nul] != prev[:prev_nul]:
                return self._restarted(data)
            # still before the first wrap: the text between the old and the new first NUL is new
            self._prev, self._pos = data, nul
            return self._text(data[prev_nul:nul])
        n = len(data)
        if pos is None:
            start, length = self._changed_stretch(prev, data)
            if data[start - 1] != 0x0A:  # not at a line start (start - 1 may be -1: the last byte, circularly)
                self._skip_first = True
        else:
            # known position: the new text runs from there to the last byte that changed
            start = pos
            length = _last_difference(prev[pos:] + prev[:pos], data[pos:] + data[:pos]) + 1
        self._prev, self._pos = data, (start + length) % n
        return self._text((data[start:] + data[:start])[:length])

    def _first(self, data: bytes, backlog: bool) -> list[str]:
        self._prev, self._partial, self._skip_first = data, b"", False
        nul = data.find(0)
        if nul < 0:  # already wrapped: where it starts is unknown until something changes
            self._pos = None
            return []
        self._pos = nul
        text = data[:nul]
        if backlog:
            return self._text(text)
        self._partial = text[text.rfind(b"\n") + 1 :]
        return []

    def _restarted(self, data: bytes) -> list[str]:
        self.restarts += 1
        out = self.flush()
        return out + self._first(data, True)

    @staticmethod
    def _changed_stretch(prev: bytes, cur: bytes) -> tuple[int, int]:
        """(start, length) of the shortest circular stretch that holds every changed byte (they differ)."""
        n = len(cur)
        changed = [i for i in range(n) if cur[i] != prev[i]]
        # the widest circular gap between two consecutive changes is the part the remote did not write
        gap, start = -1, changed[0]
        for a, b in zip(changed, changed[1:] + [changed[0] + n], strict=True):
            if b - a - 1 > gap:
                gap, start = b - a - 1, b % n
        return start, n - gap

    def _text(self, new: bytes) -> list[str]:
        buf = self._partial + new
        if self._skip_first:
            cut = buf.find(b"\n")
            if cut < 0:
                self._partial = b""
                return []
            buf = buf[cut + 1 :]
            self._skip_first = False
        parts = buf.split(b"\n")
        last = parts.pop()
        while len(last) > self.max_line:
            parts.append(last[: self.max_line])
            last = last[self.max_line :]
        self._partial = last
        return [p.decode("utf-8", "replace").rstrip("\r") for p in parts]
