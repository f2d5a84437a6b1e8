"""Run the QEMU bed once and assert what it shows (docs/hwtest.md).

``python3 hwtest/run.py [--mode short] [--out build/hwtest]`` starts, on the
host: the remote (hwtest/remote.py) on the board folder whose ``memory`` is
the guest's second memory node, QEMU with the devmem_check plugin, and the
mailbox bridge (hwtest/bridge.py); then it reads the guest's console, where
the initramfs' /init reports ``HWTEST ...`` lines, and checks them against
the plugin's log.  Artifacts (console.log, plugin.log, remote.log,
bridge.log, rprocd.log) stay in ``OUT/run-MODE/``; on failure they are printed.
Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BASE, SIZE = 0x60000000, 0x8000
MARK = 0x3B0  # negctl's phase marks (before the resource table at +0x3b8)
JOURNAL_PREFIX = re.compile(r"^\[\s*\d+\.\d+\] [^\s\[]+\[\d+\]: (.*)$")


class Bed:
    def __init__(self, out: Path, mode: str, timeout: float):
        self.out, self.mode, self.timeout = out, mode, timeout
        self.run = out / f"run-{mode}"
        self.board = self.run / "board"
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.lines: list[str] = []
        self.failures: list[str] = []
        self._libs: dict[Path, bytes] = {}

    # -- processes ---------------------------------------------------------------

    def spawn(self, name: str, argv: list[str], **kw) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        with open(self.run / f"{name}.log", "wb") as log:  # the child keeps its own descriptor
            p = subprocess.Popen(argv, stdout=kw.pop("stdout", log), stderr=log, env=env, **kw)
        self.procs.append((name, p))
        return p

    def stop_all(self) -> None:
        for _name, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for _name, p in reversed(self.procs):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    # -- the run -----------------------------------------------------------------

    def qemu_argv(self) -> list[str]:
        machine = subprocess.run(
            ["sh", str(HERE / "qemu-args.sh"), str(self.board)], check=True, capture_output=True, text=True
        ).stdout.split()
        k = self.out / "kernel"
        plugin = (
            f"{self.out / 'devmem_check.so'},base={BASE:#x},size={SIZE:#x},mark={BASE + MARK:#x},"
            f"log={self.run / 'plugin.log'}"
        )
        if self.mode in ("short", "full", "restart", "kill9"):
            initrd, append, disk = self.out / "initrd.cpio.gz", "", []
        else:  # systemd: the cached image, read-only (-snapshot), the run's payload in a second cpio
            initrd, append = self.initrd_with_payload(), ""
            disk = ["-drive", f"if=none,file={self.out / 'rootfs.img'},format=raw,id=hd,snapshot=on"]
        if disk:
            disk += ["-device", "virtio-blk-device,drive=hd"]
            append = " root=/dev/vda rw" + append
        return [
            "nice", "-n", "10", "qemu-system-aarch64", *machine,
            "-no-reboot", "-nodefaults",
            "-chardev", "stdio,id=con,signal=off",
            "-serial", "chardev:con",
            "-chardev", f"socket,id=mbox,path={self.run / 'mbox.sock'},server=on,wait=off",
            "-serial", "chardev:mbox",
            "-kernel", str(k / "Image"),
            "-initrd", str(initrd),
            "-dtb", str(self.out / "bed.dtb"),
            "-append", f"console=ttyAMA0 panic=-1 quiet hwtest.mode={self.mode}{append}",
            *disk,
            "-plugin", plugin,
        ]  # fmt: skip

    def initrd_with_payload(self) -> Path:
        """loader.cpio.gz + a second archive with /payload (the kernel unpacks both)."""
        pay = self.run / "payload-root" / "payload"
        (pay / "systemd" / "multi-user.target.wants").mkdir(parents=True)
        subprocess.run(["cp", "-a", str(self.out / "payload" / "debs"), str(pay)], check=True)
        for src in ("guest/bedtest.py", "guest/rprocd.toml", "guest/systemd-test.sh"):
            subprocess.run(["cp", str(HERE / src), str(pay)], check=True)
        subprocess.run(["cp", str(self.out / "initrd-root" / "lib" / "hwtest" / "negctl"), str(pay)], check=True)
        subprocess.run(["cp", str(HERE / "guest" / "hwtest.service"), str(pay / "systemd")], check=True)
        (pay / "systemd" / "multi-user.target.wants" / "hwtest.service").symlink_to("../hwtest.service")
        out = self.run / "initrd.cpio.gz"
        with open(out, "wb") as f:
            f.write((self.out / "loader.cpio.gz").read_bytes())
            files = subprocess.run(["find", "."], cwd=self.run / "payload-root", check=True, capture_output=True).stdout
            cpio = subprocess.run(
                ["cpio", "-o", "-H", "newc", "--quiet"],
                cwd=self.run / "payload-root",
                input=files,
                check=True,
                capture_output=True,
            ).stdout
            f.write(subprocess.run(["gzip", "-1"], input=cpio, check=True, capture_output=True).stdout)
        return out

    def phases(self) -> dict[int, list[str]]:
        """The detector's violations by phase: the last MARK before each (0 = before any)."""
        out: dict[int, list[str]] = {}
        mark = 0
        try:
            text = (self.run / "plugin.log").read_text()
        except FileNotFoundError:
            return out
        for ln in text.splitlines():
            if ln.startswith("MARK "):
                mark = int(ln.split()[1])
                out.setdefault(mark, [])
            elif ln.startswith("VIOLATION "):
                out.setdefault(mark, []).append(ln)
        return out

    def start(self) -> subprocess.Popen:
        if self.run.exists():
            subprocess.run(["rm", "-rf", str(self.run)], check=True)
        self.board.mkdir(parents=True)
        with open(self.board / "memory", "wb") as f:
            f.truncate(SIZE)
        self.spawn("remote", [sys.executable, str(HERE / "remote.py"), "--board", str(self.board)])
        argv = self.qemu_argv()
        (self.run / "qemu.cmd").write_text(shlex.join(argv) + "\n")
        qemu = self.spawn("qemu", argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.spawn(
            "bridge",
            [sys.executable, str(HERE / "bridge.py"), "--board", str(self.board)]
            + ["--chardev", str(self.run / "mbox.sock")],
        )
        return qemu

    def read_console(self, qemu: subprocess.Popen) -> None:
        assert qemu.stdout is not None
        deadline = time.monotonic() + self.timeout
        os.set_blocking(qemu.stdout.fileno(), False)
        buf = b""
        with open(self.run / "console.log", "wb") as log:
            while True:
                if time.monotonic() > deadline:
                    self.failures.append(f"the guest did not finish within {self.timeout:.0f} s")
                    self.stop_qemu(qemu)
                    break
                chunk = qemu.stdout.read(65536)
                if chunk is None:
                    if qemu.poll() is not None:
                        break
                    time.sleep(0.05)
                    continue
                if not chunk:
                    break
                log.write(chunk)
                log.flush()
                buf += chunk
                *done, buf = buf.split(b"\n")
                for raw in done:
                    self.on_line(raw.decode(errors="replace").rstrip("\r"))
        qemu.wait()

    @staticmethod
    def stop_qemu(qemu: subprocess.Popen) -> None:
        """SIGTERM first: QEMU then exits cleanly and the plugin writes its summary."""
        qemu.terminate()
        try:
            qemu.wait(30)
        except subprocess.TimeoutExpired:
            qemu.kill()

    def on_line(self, line: str) -> None:
        # Under systemd the guest's output reaches the console through the journal, with its
        # prefix ("[  52.31] sh[164]: HWTEST ..."): take the message.
        m = JOURNAL_PREFIX.match(line)
        if m:
            line = m.group(1)
        self.lines.append(line)
        if line.startswith("HWTEST ") and not line.startswith("HWTEST negctl"):
            print(line, flush=True)
        if line.startswith("HWTEST request remote-restart"):
            self.restart_remote()

    def restart_remote(self) -> None:
        """Stop the remote and start a new one, which writes its table afresh (sim-board.md step 4)."""
        for name, p in self.procs:
            if name == "remote" and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(20)
        self.spawn("remote2", [sys.executable, str(HERE / "remote.py"), "--board", str(self.board)])

    # -- checks ------------------------------------------------------------------

    def has(self, pattern: str, what: str) -> re.Match[str] | None:
        for line in self.lines:
            m = re.search(pattern, line)
            if m:
                return m
        self.failures.append(f"{what}: no console line matches {pattern!r}")
        return None

    def check(self) -> None:
        for line in self.lines:
            if line.startswith("HWTEST FAIL"):
                self.failures.append(line[len("HWTEST ") :])
        if self.mode == "systemd":
            self.has(r"HWTEST systemd boot .*pid1=systemd", "systemd as PID 1")
            self.has(r"HWTEST apt install ok rprocd \S+ arm64", "apt install of the package")
            self.has(r"HWTEST apt pulled in: .*python3-periphery", "apt resolved Debian's python3-periphery")
            self.has(r"HWTEST native: (extension|ctypes) \| native recvmmsg/sendmmsg", "the arm64 native helpers load")
            self.has(r"HWTEST systemd is-active=active status='.*attached.*4 endpoints", "systemd status")
            self.has(r"HWTEST devnode /dev/uio\d+ rprocd 660 name=rpmsg_shm", "udev rule on the window")
            self.has(r"HWTEST devnode /dev/uio\d+ rprocd 660 name=mbox", "udev rule on the mailbox")
        self.has(r"HWTEST uio uio\d+ name=rpmsg_shm addr=0x0*60000000 size=0x0*8000", "UIO window")
        self.has(r"HWTEST uio uio\d+ name=mbox addr=0x0*9040000 size=0x0*1000", "UIO mailbox")
        self.has(r"HWTEST irq .*mbox", "mailbox interrupt")
        self.has(r"HWTEST attached endpoints=4", "attach")
        self.has(r"HWTEST echo ok n=\d+", "echoes")
        if self.mode == "restart":
            self.has(r"HWTEST reattach ok", "remote restart and re-attach")
        if self.mode == "kill9":
            self.has(r"HWTEST kill9 ok", "kill -9 and resume")
        if self.mode not in ("short", "restart", "kill9"):
            self.has(r"HWTEST sink ok", "sink")
            self.has(r"HWTEST source ok", "source")
            self.has(r"HWTEST kill9 ok", "kill -9 and resume")
            self.has(r"HWTEST reattach ok", "remote restart and re-attach")
            # The first remote lived through the kill -9: one session, never ended or reset.
            first = (self.run / "remote.log").read_text() if (self.run / "remote.log").exists() else ""
            if "'sessions': 1, 'sessions_ended': 0, 'reboots': 0" not in first:
                self.failures.append("the first remote's session did not survive the kill -9 untouched (remote.log)")
            second = (self.run / "remote2.log").read_text() if (self.run / "remote2.log").exists() else ""
            if "attached:" not in second:
                self.failures.append("rprocd did not attach to the restarted remote (remote2.log)")
        self.has(r"HWTEST exit rc=0", "guest test script")
        # The negative control: exactly one violation for each misuse, none for the aligned run,
        # none before it (boot) and none after it (rprocd).
        phases = self.phases()
        expect = {0: ("boot", 0), 1: ("aligned", 0), 2: ("unaligned", 1), 3: ("dczva", 1), 4: ("rprocd", 0)}
        for mark, (what, n) in expect.items():
            got = phases.get(mark)
            if got is None and mark:
                self.failures.append(f"detector phase {what}: its mark was never logged")
            elif len(got or []) != n:
                self.failures.append(f"detector phase {what}: {len(got or [])} violation(s), expected {n}")
                for v in (got or [])[:10]:
                    self.failures.append(f"  {what}: {self.symbolize(v)}")
            else:
                print(f"HWTEST detector phase {what}: {n} violation(s), as expected", flush=True)
        summary = ""
        try:
            lines = (self.run / "plugin.log").read_text().splitlines()
            summary = next(ln for ln in lines if ln.startswith("devmem_check: accesses="))
        except (FileNotFoundError, StopIteration):
            self.failures.append("the detector wrote no summary (was the plugin loaded?)")
        m = re.search(r"accesses=(\d+) violations=(\d+)", summary)
        if m:
            print(f"HWTEST detector: {summary}", flush=True)
            if int(m.group(1)) < 1000:
                self.failures.append(f"the detector saw only {m.group(1)} window accesses: was it watching?")

    def symbolize(self, violation: str) -> str:
        """Name the guest library that holds a violation's instruction.

        The pc is the one the instruction was first translated at: aarch64 TBs
        are position-independent (CF_PCREL) and shared by every process that
        maps the same code page, so the pc may be another process's address.
        The page offset and the instruction word are the same everywhere, so
        they are looked up in the guest's libraries instead.
        """
        m = re.search(r"pc=0x([0-9a-f]+) insn=0x([0-9a-f]{8})", violation)
        if not m:
            return violation
        off, word = int(m.group(1), 16) & 0xFFF, bytes.fromhex(m.group(2))[::-1]
        hits = []
        for lib in sorted((self.out / "initrd-root").glob("lib/aarch64-linux-gnu/lib*.so*")):
            data = self._libs.setdefault(lib, lib.read_bytes())
            i = data.find(word)
            while i != -1:
                if i & 0xFFF == off:
                    hits.append(f"{lib.name}+{i:#x}")
                i = data.find(word, i + 1)
        return f"{violation} [{' or '.join(hits) or 'not in a guest library'}]"

    def dump(self) -> None:
        """The logs, the console last, then what the guest said: the end of a CI log is what is read."""
        for name in ("plugin", "remote", "remote2", "bridge", "qemu", "console"):
            p = self.run / f"{name}.log"
            if p.exists():
                print(f"----- {p} -----")
                print(p.read_text(errors="replace")[-20000:])
        said = [ln for ln in self.lines if ln.startswith("HWTEST ") and not ln.startswith("HWTEST watchdog:")]
        print(f"----- the guest's HWTEST lines ({len(said)}, the last 60) -----")
        for ln in said[-60:]:
            print(ln)
        print("----- the console's last 25 lines -----")
        for ln in self.lines[-25:]:
            print(ln)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "build" / "hwtest"))
    p.add_argument("--mode", choices=("short", "restart", "kill9", "full", "systemd"), default="short")
    p.add_argument("--timeout", type=float, default=1200)
    args = p.parse_args(argv)
    bed = Bed(Path(args.out).resolve(), args.mode, args.timeout)
    t0 = time.monotonic()
    # A SIGTERM (a stopped make, a CI timeout) still stops QEMU, the remote and the bridge.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        qemu = bed.start()
        bed.read_console(qemu)
    finally:
        bed.stop_all()
    rlog = "\n".join(ln[len("RPROCD ") :] for ln in bed.lines if ln.startswith("RPROCD "))
    (bed.run / "rprocd.log").write_text(rlog + "\n")
    bed.check()
    print(f"HWTEST {args.mode}: {time.monotonic() - t0:.0f} s, artifacts in {bed.run}", flush=True)
    if bed.failures:
        bed.dump()
        for f in bed.failures:
            print(f"HWTEST FAILED: {f}", flush=True)
        return 1
    print("HWTEST passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
