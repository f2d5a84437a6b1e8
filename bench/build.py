"""Build the bench's C programs into ``bench/out/`` with the system compiler.

``$CC`` (default ``gcc``) with ``-O2 -Wall -Wextra``; a program is rebuilt
only when one of its sources is newer than it.  ``python -m bench.build``
builds and prints the command lines.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
CFLAGS = ["-O2", "-Wall", "-Wextra"]
PROGRAMS: dict[str, tuple[list[str], list[str]]] = {
    # name: (sources, extra flags)
    "remote": (["remote.c"], []),
    "client": (["client.c"], ["-pthread"]),
    "host": (["host.c"], []),
    "pingpong": (["pingpong.c"], []),
}


class BuildError(RuntimeError):
    pass


def compiler() -> str:
    return os.environ.get("CC", "gcc")


def build(out: Path = OUT, *, verbose: bool = True) -> dict[str, Path]:
    """Compile what is out of date; returns program name -> binary path.  Raises BuildError."""
    out.mkdir(parents=True, exist_ok=True)
    cc = compiler()
    paths: dict[str, Path] = {}
    for name, (sources, extra) in PROGRAMS.items():
        binary = out / name
        deps = [HERE / s for s in sources] + [HERE / "common.h"]
        paths[name] = binary
        if binary.exists() and all(d.stat().st_mtime <= binary.stat().st_mtime for d in deps):
            continue
        argv = [cc, *CFLAGS, *extra, "-o", str(binary), *(str(HERE / s) for s in sources)]
        if verbose:
            print("  " + shlex.join(argv), file=sys.stderr)
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        except FileNotFoundError:
            raise BuildError(f"no C compiler {cc!r} (install gcc, or set CC)") from None
        if r.returncode != 0 or r.stderr.strip():
            # warnings count as failures: the programs are meant to build clean with -Wall -Wextra
            binary.unlink(missing_ok=True)
            raise BuildError(f"{shlex.join(argv)} failed:\n{r.stderr}")
    return paths


def main() -> int:
    try:
        paths = build()
    except BuildError as e:
        print(e, file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
