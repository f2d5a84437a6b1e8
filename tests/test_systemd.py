"""The package under a real systemd: a Debian 12 container booted with ``systemd-nspawn --boot``.

What the unit promises can only be seen with systemd itself running it:
``Type=notify`` readiness (also with no UIO device at all), the watchdog,
reload, restart after a crash with the remote's session resumed, a clean
stop, the group-only sockets, the journal's structured fields and a client
unit ordered with ``ExecStartPre=rprocctl wait``.

The container: a ``debootstrap --variant=minbase`` Debian 12 tree, made once
and kept in ``build/nspawn-root`` (``$RPROCD_NSPAWN_ROOT``; a few minutes
cold, from Debian's archive only), booted with ``--volatile=overlay`` so
that the tree itself stays as debootstrap left it and every run starts
fresh.  The .deb is ``$RPROCD_DEB`` or a ``make deb`` into a temporary folder.

How it is booted, for a host that may not run systemd itself (this one's PID 1
is not systemd), and what that needs:

* nspawn inside ``unshare -m`` with a private tmpfs on ``/run``: nspawn writes
  ``/run/systemd/nspawn``, and the host's ``/run`` is not ours to fill;
* its own cgroup: under a host systemd, a transient scope (``systemd-run
  --scope``); without one, child cgroups of our own in the systemd
  hierarchies (unified and v1 name=systemd), and ``--register=no --keep-unit``
  (no machined, no bus);
* ``/proc`` is never mounted inside the tree beforehand;
* commands go in with ``nsenter -t <container init> -a`` (no machined needed).

Needs (Debian packages): systemd-container (nspawn), debootstrap, util-linux
(unshare, nsenter), and what ``make deb`` needs; and root for all of the
container's part (debootstrap, cgroups, nspawn, nsenter). As a normal user
those commands go through ``sudo -n`` (the README says so), and ``make deb``
stays the user's.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Cold, debootstrap makes the tree first (a few minutes); warm, the whole file takes well under a minute.
pytestmark = pytest.mark.timeout(1800)

REPO = Path(__file__).resolve().parents[1]
ROOT = Path(os.environ.get("RPROCD_NSPAWN_ROOT", REPO / "build" / "nspawn-root"))
# What the container needs beyond minbase: systemd to boot, and the package's dependencies so that
# dpkg -i needs no network (python3-uvloop is the package's Recommends).
PACKAGES = (
    "systemd,systemd-sysv,dbus,python3,procps,python3-pyudev,python3-periphery,python3-pyelftools,python3-systemd,"
    "python3-uvloop"
)
STAMP = ".rprocd-nspawn-root"  # inside ROOT: the package list it was made with
HOST_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "HOME": os.environ.get("HOME", "/root")}
# The container's part needs root: a normal user's tests run it through sudo (non-interactive: no password prompt).
AS_ROOT = [] if os.geteuid() == 0 else ["sudo", "-n", "env", *[f"{k}={v}" for k, v in HOST_ENV.items()]]
WATCHDOG_SEC = 2  # the drop-in's WatchdogSec=, short so that 3 periods pass quickly

SIM_UNIT = """\
[Unit]
Description=Simulated remote core on the virtual board /run/rprocd-board (test)

[Service]
User=rprocd
Group=rprocd
RuntimeDirectory=rprocd-board
RuntimeDirectoryMode=0770
RuntimeDirectoryPreserve=yes
ExecStart=/usr/bin/rprocctl sim --board /run/rprocd-board
"""

# The drop-in docs/install.md documents for trying the package without a board.
BOARD_DROPIN = f"""\
[Unit]
Wants=rprocd-sim.service
After=rprocd-sim.service

[Service]
ExecStart=
ExecStart=/usr/bin/rprocd -c /etc/rprocd/rprocd.toml --board /run/rprocd-board
ReadWritePaths=/run/rprocd-board
WatchdogSec={WATCHDOG_SEC}s
"""

# A client as docs/install.md tells one to write it.
CLIENT_UNIT = """\
[Unit]
Description=A program that talks to rpmsg-client-sample (test)
Wants=rprocd.service
After=rprocd.service

[Service]
Type=oneshot
User=nobody
SupplementaryGroups=rprocd
ExecStartPre=/usr/bin/rprocctl wait --endpoint rpmsg-client-sample --timeout 60
ExecStart=/usr/bin/rprocctl send rpmsg-client-sample from-a-unit --replies 1 --timeout 10
"""


def host(
    *cmd: str | Path, timeout: float = 120, check: bool = True, root: bool = False
) -> subprocess.CompletedProcess[str]:
    """A command on the host; ``root``: as root (through sudo for a normal user)."""
    argv = (AS_ROOT if root else []) + [str(c) for c in cmd]
    return subprocess.run(argv, env=HOST_ENV, capture_output=True, text=True, timeout=timeout, check=check)


def wait_until(what: str, cond: Callable[[], bool], timeout: float = 60.0, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(every)


# -- the tree, the package, the boot -----------------------------------------------------------------------


def remove_tree(path: Path) -> None:
    """rm -rf of a (half-made) root: first unmount what debootstrap may have left mounted in it (/proc, ...)."""
    if not path.exists():
        return
    prefix = str(path.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for m in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        host("umount", "--lazy", m, check=False, root=True)
    host("rm", "-rf", "--one-file-system", path, timeout=600, root=True)


def nspawn_root() -> Path:
    """build/nspawn-root, made once with debootstrap (and again when the package list changes)."""
    if (ROOT / STAMP).is_file() and (ROOT / STAMP).read_text() == PACKAGES:
        return ROOT
    tmp = ROOT.with_name(ROOT.name + ".tmp")
    remove_tree(tmp)
    ROOT.parent.mkdir(parents=True, exist_ok=True)
    try:
        host(
            "nice",
            "-n",
            "10",
            "debootstrap",
            "--variant=minbase",
            f"--include={PACKAGES}",
            "bookworm",
            tmp,
            timeout=1500,
            root=True,
        )
    except BaseException:
        remove_tree(tmp)
        raise
    host("sh", "-c", 'printf %s "$1" > "$2"', "-", PACKAGES, tmp / STAMP, root=True)
    remove_tree(ROOT)
    host("mv", tmp, ROOT, root=True)
    return ROOT


def build_deb(out: Path) -> Path:
    given = os.environ.get("RPROCD_DEB")
    if given:
        return Path(given)
    r = host("make", "-C", REPO, "deb", f"DEBBUILD={out / 'build'}", f"DIST={out / 'dist'}", timeout=600, check=False)
    assert r.returncode == 0, f"make deb failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    [deb] = (out / "dist").glob("rprocd_*.deb")
    return deb


def host_has_systemd() -> bool:
    return Path("/run/systemd/system").is_dir()


def own_cgroups() -> list[Path]:
    """Fresh cgroups for nspawn when no host systemd gives it a scope, one in each hierarchy systemd uses.

    nspawn takes its place from the unified hierarchy (``0::`` in /proc/self/cgroup) and, on a hybrid host like
    this one, mirrors it into the v1 ``name=systemd`` one: it must be ours in both, or it creates its
    ``payload`` and ``supervisor`` under the root (shared with any other nspawn) and fails when they are gone.
    """
    name = f"rprocd-nspawn-{os.getpid()}"
    out = []
    for base in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup")):
        is_v2_root = base == Path("/sys/fs/cgroup") and (base / "cgroup.controllers").exists()
        if (base / "cgroup.procs").exists() and (base != Path("/sys/fs/cgroup") or is_v2_root):
            host("mkdir", "-p", base / name, root=True)
            out.append(base / name)
    return out


def remove_cgroup(cg: Path) -> None:
    """rmdir of the cgroup and what nspawn made below it, deepest first (a cgroup is removed with rmdir)."""
    host("find", cg, "-depth", "-type", "d", "-exec", "rmdir", "{}", ";", check=False, root=True)


class Container:
    """A booted container; ``sh`` runs a shell command in all its namespaces."""

    def __init__(self, root: Path, share: Path, log: Path) -> None:
        self.log = log
        self.cgroups = [] if host_has_systemd() else own_cgroups()
        nspawn = [
            "systemd-nspawn",
            "--quiet",
            f"--directory={root}",
            "--volatile=overlay",  # the tree stays as debootstrap made it; every boot starts fresh
            f"--bind-ro={share}:/mnt/rprocd-test",
            f"--machine=rprocd-test-{os.getpid()}",
            "--private-network",
            "--console=passive",
            "--boot",
        ]
        if host_has_systemd():
            prefix = ["systemd-run", "--scope", "--quiet", "--"]
        else:
            nspawn[1:1] = ["--register=no", "--keep-unit"]
            prefix = []
        script = "mount -t tmpfs -o mode=0755 tmpfs /run && "
        for cg in self.cgroups:
            script += f"echo $$ > {shlex.quote(str(cg / 'cgroup.procs'))} && "
        script += "exec " + shlex.join(prefix + nspawn)
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [*AS_ROOT, "unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=HOST_ENV,
            )
        self.leader = 0
        try:
            self._boot()
        except BaseException:
            self.stop()
            raise

    def _boot(self) -> None:
        wait_until("the container's init", self._find_leader, 60)

        def booted() -> bool:  # "Failed to connect to bus" until systemd listens, then --wait waits for the boot
            r = self.sh("timeout 120 systemctl is-system-running --wait", check=False, timeout=150)
            return r.stdout.strip() in ("running", "degraded")

        try:
            wait_until("the container's boot", booted, 150)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.console()}") from None

    def _find_leader(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"nspawn exited with {self.proc.returncode}:\n{self.console()}")
        # unshare execs sh, sh execs nspawn (or systemd-run, which execs it): the container's init is its child,
        # or its grandchild when sudo (a normal user's run) is in front
        parents = [str(self.proc.pid)]
        for _ in range(2):
            kids = [k for p in parents for k in host("pgrep", "-P", p, check=False).stdout.split()]
            for k in kids:
                comm = Path(f"/proc/{k}/comm").read_text().strip() if Path(f"/proc/{k}/comm").exists() else ""
                if comm == "systemd":
                    self.leader = int(k)
                    return True
            parents = kids
        return False

    def console(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def sh(self, command: str, *, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [*AS_ROOT, "nsenter", "-t", str(self.leader), "-a", "env", "-i", *[f"{k}={v}" for k, v in HOST_ENV.items()]]
            + ["sh", "-c", command],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"in the container: {command!r} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def prop(self, unit: str, name: str) -> str:
        return self.sh(f"systemctl show -p {name} --value {unit}").stdout.strip()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # nspawn asks the container's systemd to power off
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                if AS_ROOT:  # sudo would die and leave nspawn behind
                    host("pkill", "-KILL", "-P", str(self.proc.pid), check=False, root=True)
                self.proc.kill()
                self.proc.wait(10)
        for cg in self.cgroups:
            remove_cgroup(cg)


@pytest.fixture(scope="module")
def box() -> Iterator[Container]:
    root = nspawn_root()
    with tempfile.TemporaryDirectory(prefix="rprocd-nspawn-") as tmp:
        share = Path(tmp) / "share"
        share.mkdir()
        shutil.copy(build_deb(Path(tmp)), share / "rprocd.deb")
        for name, text in (
            ("rprocd-sim.service", SIM_UNIT),
            ("virtual-board.conf", BOARD_DROPIN),
            ("rprocd-client.service", CLIENT_UNIT),
        ):
            (share / name).write_text(text)
        c = Container(root, share, Path(tmp) / "console.log")
        try:
            yield c
        finally:
            c.stop()


# -- the tests, in order: each one leaves the service as the next expects it ------------------------------


def test_installed_without_uio_devices_it_is_ready_and_says_what_it_waits_for(box: Container) -> None:
    """Issue 11 section 6 under systemd: the package's own config, no UIO device: the start job ends (READY=1)
    instead of timing out, and STATUS= names the devices."""
    box.sh("dpkg -i /mnt/rprocd-test/rprocd.deb")  # its postinst enables and starts rprocd.service
    wait_until("rprocd active", lambda: box.prop("rprocd", "ActiveState") == "active", 60)
    assert box.prop("rprocd", "SubState") == "running"
    assert "waiting for UIO device(s) rpmsg_shm, mbox" in box.prop("rprocd", "StatusText")
    hint = box.sh("journalctl -u rprocd -o cat --no-pager | grep -c uio_pdrv_genirq", check=False).stdout.strip()
    assert hint == "1"
    box.sh("rprocctl status | grep -q 'waiting for UIO device(s) rpmsg_shm, mbox'")


def test_start_on_the_virtual_board_then_wait_succeeds(box: Container) -> None:
    box.sh(
        "cp /mnt/rprocd-test/rprocd-sim.service /mnt/rprocd-test/rprocd-client.service /etc/systemd/system/ && "
        "mkdir -p /etc/systemd/system/rprocd.service.d && "
        "cp /mnt/rprocd-test/virtual-board.conf /etc/systemd/system/rprocd.service.d/ && "
        "systemctl daemon-reload && systemctl restart rprocd"
    )
    assert box.prop("rprocd", "ActiveState") == "active"  # restart returns after READY=1
    assert box.prop("rprocd-sim", "ActiveState") == "active"
    box.sh("rprocctl wait --endpoint rpmsg-client-sample --endpoint rpmsg-tty --timeout 60", timeout=90)
    assert "attached to main" in box.prop("rprocd", "StatusText")


def test_the_rprocd_group_may_echo_and_nobody_may_not(box: Container) -> None:
    box.sh("id alice >/dev/null 2>&1 || useradd --no-create-home --groups rprocd alice")
    as_alice = "setpriv --reuid=alice --regid=alice --init-groups"
    r = box.sh(f"{as_alice} rprocctl send rpmsg-client-sample hello --replies 1 --timeout 10")
    assert r.stdout == "hello\n"
    r = box.sh("setpriv --reuid=nobody --regid=nogroup --clear-groups rprocctl endpoints", check=False)
    assert r.returncode == 1 and "not allowed" in r.stderr, r
    r = box.sh(
        "setpriv --reuid=nobody --regid=nogroup --clear-groups rprocctl send rpmsg-client-sample x --replies 1",
        check=False,
    )
    assert r.returncode == 1 and r.stdout == "", r


def test_the_watchdog_holds(box: Container) -> None:
    assert box.prop("rprocd", "WatchdogUSec") == f"{WATCHDOG_SEC}s"
    pid, restarts = box.prop("rprocd", "MainPID"), box.prop("rprocd", "NRestarts")
    pings = box.prop("rprocd", "WatchdogTimestampMonotonic")
    until = time.monotonic() + 3 * WATCHDOG_SEC
    wait_until("three watchdog periods", lambda: time.monotonic() > until, 4 * WATCHDOG_SEC)
    wait_until(
        "a fresh watchdog ping", lambda: box.prop("rprocd", "WatchdogTimestampMonotonic") != pings, 2 * WATCHDOG_SEC
    )
    assert (box.prop("rprocd", "MainPID"), box.prop("rprocd", "NRestarts")) == (pid, restarts)
    assert box.prop("rprocd", "ActiveState") == "active"


def _status(box: Container) -> dict:
    [remote] = json.loads(box.sh("rprocctl status --json").stdout)["remotes"]
    return dict(remote)


def test_reload_keeps_the_process_and_the_session(box: Container) -> None:
    pid, before = box.prop("rprocd", "MainPID"), _status(box)
    box.sh("systemctl reload rprocd")
    wait_until("the reload to end", lambda: box.prop("rprocd", "SubState") == "running", 30)
    wait_until("READY=1 after the reload", lambda: "attached" in box.prop("rprocd", "StatusText"), 30)
    after = _status(box)
    assert box.prop("rprocd", "MainPID") == pid
    assert (after["state"], after["attach_count"]) == ("attached", before["attach_count"])
    assert "configuration reloaded" in box.sh("journalctl -u rprocd -o cat --no-pager").stdout
    assert box.sh("rprocctl send rpmsg-client-sample again --replies 1").stdout == "again\n"


def test_sigkill_gets_it_restarted_and_the_session_resumed(box: Container) -> None:
    pid, restarts = box.prop("rprocd", "MainPID"), int(box.prop("rprocd", "NRestarts"))
    box.sh(f"kill -9 {pid}")
    wait_until(
        "systemd to restart rprocd",
        lambda: box.prop("rprocd", "MainPID") not in ("0", pid) and box.prop("rprocd", "ActiveState") == "active",
        60,
    )
    assert int(box.prop("rprocd", "NRestarts")) == restarts + 1
    box.sh("rprocctl wait --endpoint rpmsg-client-sample --timeout 60", timeout=90)
    [remote] = json.loads(box.sh("rprocctl stats --json").stdout)["remotes"]
    assert remote["host"]["resumes"] == 1 and remote["host"]["resets"] == 0, remote["host"]
    assert box.sh("rprocctl send rpmsg-client-sample resumed --replies 1").stdout == "resumed\n"


def test_a_client_unit_ordered_with_rprocctl_wait(box: Container) -> None:
    """``ExecStartPre=rprocctl wait --endpoint ...`` (docs/install.md): started together with a stopped rprocd,
    the client runs once the endpoint exists, not merely once rprocd said READY=1."""
    box.sh("systemctl stop rprocd")
    box.sh("systemctl start rprocd-client.service", timeout=120)
    assert box.prop("rprocd-client", "Result") == "success"
    out = box.sh("journalctl -u rprocd-client -o cat --no-pager").stdout
    assert "from-a-unit" in out, out


def test_journal_entries_carry_remote_and_endpoint(box: Container) -> None:
    entries = [json.loads(line) for line in box.sh("journalctl -u rprocd -o json --no-pager").stdout.splitlines()]
    native = [e for e in entries if e.get("_TRANSPORT") == "journal"]
    assert native, "no native journal entries"
    about_tty = [e for e in native if "rpmsg-tty" in e["MESSAGE"]]
    wrong = [(e["MESSAGE"], e.get("REMOTE"), e.get("ENDPOINT")) for e in about_tty if e.get("ENDPOINT") != "rpmsg-tty"]
    assert about_tty and not wrong and all(e.get("REMOTE") == "main" for e in about_tty), wrong
    about_main = [e for e in native if str(e["MESSAGE"]).startswith("main: ")]
    assert about_main and all(e.get("REMOTE") == "main" for e in about_main), about_main
    # what docs/install.md shows
    found = box.sh("journalctl -u rprocd REMOTE=main ENDPOINT=rpmsg-tty -o cat --no-pager").stdout
    assert "endpoint rpmsg-tty at /run/rprocd/main/ept/rpmsg-tty" in found, found


def test_stop_is_clean_the_remote_sees_status_0_and_run_is_empty(box: Container) -> None:
    def detaches() -> int:
        log = box.sh("journalctl -u rprocd-sim -o cat --no-pager").stdout
        return log.count("session ended: host set status 0x00")

    before = detaches()
    box.sh("systemctl stop rprocd")
    assert box.prop("rprocd", "ActiveState") == "inactive"
    assert box.prop("rprocd", "Result") == "success"
    assert box.prop("rprocd", "ExecMainStatus") == "0"
    wait_until("the remote to log the host's detach (status 0)", lambda: detaches() == before + 1, 30)
    left = box.sh("find /run/rprocd -mindepth 1 2>/dev/null; true").stdout
    assert left == "", left
