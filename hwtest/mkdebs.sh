#!/bin/sh
# The packages the systemd guest installs with apt, into OUT/payload/debs:
#  - rprocd: the .deb `make deb` built (dist/rprocd_*_amd64.deb), repacked for
#    arm64 with its native helpers (_barrier.so, _sockio.so) cross-built the
#    way debian/rules builds them; the Python files are architecture-independent;
#  - the Debian 12 packages rprocd depends on that the minimal root file
#    system lacks (python3-periphery, python3-pyudev, python3-pyelftools:
#    Architecture all; python3-systemd: arm64; downloaded from Debian by fetch.sh), as a flat apt
#    repository (Packages index): the guest's apt resolves rprocd's
#    dependencies from it, as it would from Debian's mirror.
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
# Both native helpers, cross-built as debian/rules builds them (an amd64 one left in would not load,
# and rprocd would quietly take its Python fallback)
for h in barrier sockio; do
	SO=$(find "$X" -name "_$h.so")
	[ -n "$SO" ] || { echo "hwtest: _$h.so not in $DEB" >&2; exit 1; }
	aarch64-linux-gnu-gcc -O2 -fstack-protector-strong -D_FORTIFY_SOURCE=2 -Wl,-z,relro -Wl,-z,now \
		-shared -fPIC -o "$SO" "$REPO/rprocd/native/$h.c" -Wl,--no-as-needed -lc
done
sed -i 's/^Architecture: .*/Architecture: arm64/' "$X/DEBIAN/control"
# dh_python3 names the package with its architecture in the maintainer scripts (py3compile -p rprocd:amd64).
sed -i "s/rprocd:amd64/rprocd:arm64/g" "$X"/DEBIAN/postinst "$X"/DEBIAN/prerm
grep -q amd64 "$X"/DEBIAN/* && { echo "hwtest: amd64 left in the repacked control files" >&2; exit 1; }
(cd "$X" && find . -path ./DEBIAN -prune -o -type f -print0 | sed -z 's|^\./||' | xargs -0 md5sum > DEBIAN/md5sums)
dpkg-deb -b --root-owner-group "$X" "$P/" >/dev/null
for p in python3-periphery python3-pyudev python3-pyelftools python3-systemd; do
	f=$(ls "$OUT"/debs/"$p"_*_all.deb "$OUT"/debs/"$p"_*_arm64.deb 2>/dev/null | head -1)
	[ -n "$f" ] || { echo "hwtest: $p not in $OUT/debs (fetch.sh's userland-all.list)" >&2; exit 1; }
	cp "$f" "$P/"
done
(cd "$P" && dpkg-scanpackages -m . /dev/null 2>/dev/null > Packages)
ls "$P"
