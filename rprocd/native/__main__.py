"""``python -m rprocd.native [build]``: prebuild the helpers beside the package (packaging)."""

import sys
import sysconfig
from pathlib import Path

from . import _PREBUILT, CFLAGS, KIND, build, sockio

if sys.argv[1:2] == ["build"]:
    out = build(_PREBUILT)
    out2 = build(sockio.PREBUILT, source=sockio.SOURCE.name)
    print(out or "no C compiler: the pure-Python fallback will be used")
    inc = sysconfig.get_paths().get("include") or ""
    if out and (Path(inc) / "Python.h").exists():
        ext = _PREBUILT.parent / f"_rprocd_native{sysconfig.get_config_var('EXT_SUFFIX') or '.so'}"
        print(
            build(ext, cflags=(*CFLAGS, "-DRPROCD_PYTHON", f"-I{inc}")) or "the extension did not build: ctypes is used"
        )
    print(out2 or "no C compiler: sockets use one recv/send per record")
    sys.exit(0 if out and out2 else 1)
print(KIND)
print(sockio.KIND)
