#!/bin/sh
# The packages the systemd guest installs with apt, into OUT/payload/debs:
#  - rprocd: the .deb `make deb` built (dist/rprocd_*_amd64.deb), repacked for
#    arm64 with its native helper (_barrier.so) cross-built the way
#    debian/rules builds it; the Python files are architecture-independent;
#  - python3-periphery: Debian 12 has no such package, yet rprocd depends on it;
#    the bed wraps PyPI's pure-Python wheel (python-periphery) into one, so apt
#    can resolve the dependency offline.  (A user of plain Debian 12 has the
#    same gap: see docs/hwtest.md.)
# Usage: mkdebs.sh OUTDIR
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
OUT=$(cd "$1" && pwd)
P=$OUT/payload/debs
rm -rf "$P" "$OUT/repack" && mkdir -p "$P" "$OUT/repack"
DEB=$(ls "$REPO"/dist/rprocd_*_amd64.deb 2>/dev/null | head -1)
[ -n "$DEB" ] || { echo "hwtest: no dist/rprocd_*_amd64.deb: run make deb first" >&2; exit 1; }
X=$OUT/repack/rprocd
dpkg-deb -R "$DEB" "$X"
SO=$(find "$X" -name _barrier.so)
aarch64-linux-gnu-gcc -O2 -fstack-protector-strong -D_FORTIFY_SOURCE=2 -Wl,-z,relro -Wl,-z,now \
	-shared -fPIC -o "$SO" "$REPO/rprocd/native/barrier.c" -Wl,--no-as-needed -lc
sed -i 's/^Architecture: .*/Architecture: arm64/' "$X/DEBIAN/control"
(cd "$X" && find . -path ./DEBIAN -prune -o -type f -print0 | sed -z 's|^\./||' | xargs -0 md5sum > DEBIAN/md5sums)
dpkg-deb -b --root-owner-group "$X" "$P/" >/dev/null
V=$(ls "$OUT"/wheels/python_periphery-*.whl | sed 's/.*python_periphery-\([^-]*\)-.*/\1/')
Y=$OUT/repack/periphery
mkdir -p "$Y/DEBIAN" "$Y/usr/lib/python3/dist-packages"
python3 -m zipfile -e "$OUT"/wheels/python_periphery-*.whl "$Y/usr/lib/python3/dist-packages"
cat > "$Y/DEBIAN/control" <<EOC
Package: python3-periphery
Version: $V-0hwtest1
Architecture: all
Maintainer: rprocd hwtest <hwtest@localhost>
Depends: python3
Description: python-periphery $V from PyPI, wrapped for the rprocd QEMU bed
 Debian 12 has no python3-periphery; rprocd depends on it.
EOC
dpkg-deb -b --root-owner-group "$Y" "$P/" >/dev/null
ls "$P"
