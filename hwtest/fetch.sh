#!/bin/sh
# Fetch and build what the QEMU bed needs, from Debian's archive only, into
# build/hwtest/ (make clean removes it).  Nothing is installed on the host:
# apt runs with a private state directory and downloads arm64 packages and
# one source package; dpkg-deb -x extracts them.  Kernel code is never copied
# into the repo: uio_pdrv_genirq.c is taken out of linux-source-6.1 here.
#
# Outputs (all under $OUT):
#   kernel/Image           the Debian arm64 kernel (vmlinuz is an EFI-stub Image)
#   kernel/uio.ko          from the same image package
#   kernel/uio_pdrv_genirq.ko   cross-built from linux-source-6.1 + linux-headers
#   qemu-plugin.h          from Debian's source of the installed QEMU
#   debs/*.deb             arm64 userland packages (see userland.list)
#   stamp.fetch            written last: the cache is complete
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${HWTEST_OUT:-$HERE/../build/hwtest}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
[ -f "$OUT/stamp.fetch" ] && { echo "hwtest: fetch cache is complete ($OUT)"; exit 0; }
A=$OUT/apt
mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$OUT/debs" "$OUT/kernel"
MIRROR=${HWTEST_MIRROR:-http://deb.debian.org}
KEY=/usr/share/keyrings/debian-archive-keyring.gpg
cat > "$A/sources.list" <<EOS
deb [signed-by=$KEY] $MIRROR/debian bookworm main
deb [signed-by=$KEY] $MIRROR/debian bookworm-updates main
deb [signed-by=$KEY] $MIRROR/debian-security bookworm-security main
deb [signed-by=$KEY] $MIRROR/debian bookworm-backports main
deb-src [signed-by=$KEY] $MIRROR/debian bookworm main
deb-src [signed-by=$KEY] $MIRROR/debian-security bookworm-security main
deb-src [signed-by=$KEY] $MIRROR/debian bookworm-backports main
EOS
APT="-o Dir::Etc::SourceList=$A/sources.list -o Dir::Etc::SourceParts=/dev/null
 -o Dir::State::Lists=$A/lists -o Dir::State::Status=/dev/null -o Dir::Cache=$A/cache
 -o APT::Architectures::=amd64 -o APT::Architectures::=arm64 -o APT::Sandbox::User=root -qq"
# shellcheck disable=SC2086
apt_get() { apt-get $APT "$@"; }
# shellcheck disable=SC2086
apt_cache() { apt-cache $APT "$@"; }
apt_get update

# --- kernel: the newest version for which image, headers, linux-source-6.1 and
# linux-kbuild-6.1 all exist with the same version (override: HWTEST_KABI=57).
if [ -n "${HWTEST_KABI:-}" ]; then
	KABI=$HWTEST_KABI
	KV=$(apt_cache madison "linux-headers-6.1.0-$KABI-common" | awk 'NR==1{print $3}')
else
	KABI=
	for v in $(apt_cache madison linux-kbuild-6.1 | awk '{print $3}' | sort -rVu); do
		apt_cache madison linux-source-6.1 | awk '{print $3}' | grep -qx "$v" || continue
		n=$(apt_cache search --names-only '^linux-headers-6\.1\.0-[0-9]+-common$' | awk '{print $1}' |
			while read -r p; do apt_cache madison "$p" | awk '{print $3}' | grep -qx "$v" && echo "$p"; done |
			sed 's/linux-headers-6.1.0-//; s/-common//' | head -1)
		[ -n "$n" ] && { KABI=$n; KV=$v; break; }
	done
fi
[ -n "$KABI" ] || { echo "hwtest: no matching kernel/headers/source/kbuild set in the archive" >&2; exit 1; }
KREL=6.1.0-$KABI-arm64
echo "hwtest: kernel $KREL ($KV)"
cd "$OUT/debs"
apt_get download "linux-image-$KREL:arm64=$KV" "linux-headers-$KREL:arm64=$KV" \
	"linux-headers-6.1.0-$KABI-common=$KV" "linux-kbuild-6.1:amd64=$KV" "linux-source-6.1=$KV"

K=$OUT/kernel
rm -rf "$K/root" && mkdir -p "$K/root"
for d in linux-image-"$KREL"_*.deb linux-headers-*.deb linux-kbuild-6.1_*.deb; do dpkg-deb -x "$d" "$K/root"; done
cp "$K/root/boot/vmlinuz-$KREL" "$K/Image"
cp "$K/root/boot/config-$KREL" "$K/config"
cp "$(find "$K/root/lib/modules/$KREL" -name uio.ko)" "$K/uio.ko"
echo "$KREL" > "$K/release"
# The headers' Makefile includes /usr/src/...-common: point it at the extracted copy.
H=$K/root/usr/src/linux-headers-$KREL
echo "include $K/root/usr/src/linux-headers-6.1.0-$KABI-common/Makefile" > "$H/Makefile"
# uio_pdrv_genirq: the one source file, straight from the linux-source tarball.
M=$K/uio_pdrv_genirq
rm -rf "$M" && mkdir -p "$M"
dpkg-deb --fsys-tarfile linux-source-6.1_"$KV"_all.deb | tar -xO ./usr/src/linux-source-6.1.tar.xz |
	tar -xJ -C "$M" --strip-components=3 linux-source-6.1/drivers/uio/uio_pdrv_genirq.c
echo 'obj-m := uio_pdrv_genirq.o' > "$M/Kbuild"
nice -n 10 make -s -C "$H" M="$M" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- modules
cp "$M/uio_pdrv_genirq.ko" "$K/"
rm -rf "$K/root/usr/src" "$K/root/usr/lib/linux-kbuild-6.1"

# --- qemu-plugin.h from Debian's source of the QEMU that runs the bed.
QV=$(dpkg-query -W -f '${Version}' qemu-system-arm)
mkdir -p "$OUT/qemu-src" && cd "$OUT/qemu-src"
# Only the upstream tarball is needed (the header is not patched by Debian);
# the mirror may lack a backport's .dsc/.debian.tar, so their 404 is not fatal.
apt_get source --download-only "qemu=$QV" || true
ls qemu_*.orig.tar.xz >/dev/null
tar -xJf qemu_*.orig.tar.xz --wildcards --strip-components=1 '*/include/qemu/qemu-plugin.h'
cp include/qemu/qemu-plugin.h "$OUT/qemu-plugin.h"
rm -f qemu_*.orig.tar.xz

# --- arm64 userland: busybox + Python and rprocd's runtime dependencies.
cd "$OUT/debs"
# shellcheck disable=SC2046
apt_get download $(apt_cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
	--no-replaces --no-enhances --no-pre-depends $(sed 's/#.*//' "$HERE/userland.list" | awk 'NF{print $1":arm64"}') |
	grep '^[a-z0-9].*:arm64$' | sed 's/:arm64$//' | sort -u | grep -v -x -f "$HERE/userland.exclude" | sed 's/$/:arm64/')
# Architecture: all packages (depends prints them without :arm64).
# shellcheck disable=SC2046
apt_get download $(sed 's/#.*//' "$HERE/userland-all.list")
mkdir -p "$OUT/wheels"
python3 -m pip download -q --no-deps --only-binary=:all: -d "$OUT/wheels" \
	"aiomqtt>=2.0" "paho-mqtt>=2.0"
date -u > "$OUT/stamp.fetch"
echo "hwtest: fetched into $OUT"
