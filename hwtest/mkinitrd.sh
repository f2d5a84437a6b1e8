#!/bin/sh
# The short version's guest: an initramfs of Debian's arm64 packages (busybox,
# Python, pyudev, ...; extracted with dpkg-deb -x, no maintainer scripts), the
# PyPI wheels Debian 12 lacks (aiomqtt 2, paho-mqtt 2), this checkout's rprocd with its native helper
# cross-built for arm64, the kernel modules and the negative control.
# Usage: mkinitrd.sh OUTDIR   (needs fetch.sh's cache in OUTDIR)
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
OUT=$(cd "$1" && pwd)
R=$OUT/initrd-root
rm -rf "$R" && mkdir -p "$R"
for d in "$OUT"/debs/*_arm64.deb "$OUT"/debs/*_all.deb; do
	case $(basename "$d") in linux-*) continue ;; esac
	dpkg-deb -x "$d" "$R"
done
# Debian 12 has merged /usr: make the top-level links the base-files package would.
for l in bin sbin lib; do [ -e "$R/$l" ] || ln -s "usr/$l" "$R/$l"; done
SITE=$R/usr/lib/python3/dist-packages
mkdir -p "$SITE"
for w in "$OUT"/wheels/*.whl; do python3 -m zipfile -e "$w" "$SITE"; done
mkdir -p "$R/lib/hwtest" "$R/opt/rprocd" "$R/etc/rprocd"
cp "$OUT/kernel/uio.ko" "$OUT/kernel/uio_pdrv_genirq.ko" "$R/lib/hwtest/"
nice -n 10 aarch64-linux-gnu-gcc -O2 -static -o "$R/lib/hwtest/negctl" "$HERE/guest/negctl.c"
cp "$HERE/guest/bedtest.py" "$R/lib/hwtest/"
cp "$HERE/guest/rprocd.toml" "$R/etc/rprocd/rprocd.toml"
(cd "$REPO" && tar --exclude=__pycache__ -cf - rprocd) | tar -xf - -C "$R/opt/rprocd"
nice -n 10 aarch64-linux-gnu-gcc -O2 -shared -fPIC -o "$R/opt/rprocd/rprocd/native/_barrier.so" \
	"$REPO/rprocd/native/barrier.c"
cp "$HERE/guest/init.sh" "$R/init"
chmod 755 "$R/init"
printf 'root:x:0:0:root:/root:/bin/sh\nrprocd:x:999:999::/nonexistent:/bin/false\n' > "$R/etc/passwd"
printf 'root:x:0:\nrprocd:x:999:\n' > "$R/etc/group"
rm -rf "$R/usr/share/doc" "$R/usr/share/man" "$R/usr/share/locale" "$R/usr/lib/python3.11/test" \
	"$R/usr/lib/python3.11/idlelib" "$R/usr/lib/python3.11/tkinter" "$R/usr/lib/python3.11/ensurepip"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) > "$OUT/initrd.cpio.gz"
echo "hwtest: $OUT/initrd.cpio.gz ($(du -h "$OUT/initrd.cpio.gz" | cut -f1))"
