"""``python -m rprocd.native [build]``: prebuild the barrier helper beside the package (packaging)."""

import sys

from . import _PREBUILT, KIND, build

if sys.argv[1:2] == ["build"]:
    out = build(_PREBUILT)
    print(out or "no C compiler: the pure-Python fallback will be used")
    sys.exit(0 if out else 1)
print(KIND)
