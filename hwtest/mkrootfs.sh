#!/bin/sh
# The full guest: a Debian 12 arm64 root file system with systemd as PID 1,
# cached as OUT/rootfs.img (ext4, used read-only: each run boots it with
# -snapshot).  debootstrap's first stage runs here (download + unpack, no arm64
# code); its second stage runs in the guest on one boot of the bed (stage2.sh),
# so no qemu-user or binfmt is needed on the host.
# Also builds OUT/loader.cpio.gz: the initramfs that loads virtio-blk + ext4
# (modules in Debian's kernel) and switches to the root file system.
# Usage: mkrootfs.sh OUTDIR
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(cd "$1" && pwd)
[ -f "$OUT/stamp.rootfs" ] && { echo "hwtest: rootfs cache is complete"; exit 0; }
KREL=$(cat "$OUT/kernel/release")
MODS=$OUT/kernel/root/lib/modules/$KREL
R=$OUT/rootfs
MIRROR=${HWTEST_MIRROR:-http://deb.debian.org}
if [ ! -x "$R/debootstrap/debootstrap" ]; then
	rm -rf "$R"
	nice -n 10 debootstrap --arch=arm64 --foreign --variant=minbase \
		--include=systemd,systemd-sysv,udev,python3,python3-pyudev,python3-pyelftools,python3-systemd,procps,kmod \
		bookworm "$R" "$MIRROR/debian"
fi
# Kernel modules: the boot path, UIO (uio_pdrv_genirq built by fetch.sh); depmod runs in stage 2.
D=$R/lib/modules/$KREL
rm -rf "$D" && mkdir -p "$D/extra"
(cd "$MODS" && tar -cf - modules.order modules.builtin modules.builtin.modinfo kernel/drivers/virtio \
	kernel/drivers/block/virtio_blk.ko kernel/drivers/uio kernel/fs/ext4 kernel/fs/jbd2 kernel/fs/mbcache.ko \
	kernel/lib/crc16.ko kernel/lib/libcrc32c.ko kernel/crypto/crc32c_generic.ko) | tar -xf - -C "$D"
cp "$OUT/kernel/uio_pdrv_genirq.ko" "$D/extra/"
mkdir -p "$R/etc/modprobe.d" "$R/etc/modules-load.d"
echo "options uio_pdrv_genirq of_id=generic-uio" > "$R/etc/modprobe.d/uio-pdrv-genirq.conf"
printf 'uio\nuio_pdrv_genirq\n' > "$R/etc/modules-load.d/uio.conf"
echo "/dev/vda / ext4 defaults 0 1" > "$R/etc/fstab"
echo hwtest > "$R/etc/hostname"
cp "$HERE/guest/stage2.sh" "$R/stage2.sh"
chmod 755 "$R/stage2.sh"
rm -f "$OUT/rootfs.img"
mke2fs -q -t ext4 -L hwroot -d "$R" "$OUT/rootfs.img" 1536M

# The loader initramfs: busybox + the boot modules; /init copies /payload into the root.
L=$OUT/loader-root
rm -rf "$L" && mkdir -p "$L/bin" "$L/mods"
dpkg-deb --fsys-tarfile "$OUT"/debs/busybox-static_*_arm64.deb | tar -xf - -C "$L" ./bin/busybox
for m in kernel/lib/crc16.ko kernel/crypto/crc32c_generic.ko kernel/lib/libcrc32c.ko kernel/fs/mbcache.ko \
	kernel/fs/jbd2/jbd2.ko kernel/fs/ext4/ext4.ko kernel/drivers/virtio/virtio_mmio.ko kernel/drivers/block/virtio_blk.ko; do
	cp "$MODS/$m" "$L/mods/"
done
cp "$HERE/guest/loader-init.sh" "$L/init"
chmod 755 "$L/init"
(cd "$L" && find . | cpio -o -H newc --quiet | gzip -1) > "$OUT/loader.cpio.gz"

# Stage 2 in the guest, writing to the image itself (not -snapshot).
python3 "$HERE/run.py" --out "$OUT" --mode stage2 --timeout 3000
date -u > "$OUT/stamp.rootfs"
