"""``python -m rprocd.native [build]``: prebuild the native helpers beside the package (packaging)."""

import sys

from . import _PREBUILT, KIND, build, sockio

if sys.argv[1:2] == ["build"]:
    out = build(_PREBUILT)
    out2 = build(sockio.PREBUILT, source=sockio.SOURCE)
    print(out or "no C compiler: the pure-Python fallback will be used")
    print(out2 or "no C compiler: sockets use one recv/send per record")
    sys.exit(0 if out and out2 else 1)
print(KIND)
print(sockio.KIND)
