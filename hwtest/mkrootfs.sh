#!/bin/sh
# The systemd guest: a Debian 12 arm64 root file system with systemd as PID 1,
# cached as OUT/rootfs.img (ext4, used read-only: each run boots it with
# -snapshot).  debootstrap runs both stages here, on the host: the second
# stage's arm64 programs (dpkg, maintainer scripts) run under qemu-user
# (Debian's qemu-user-static) through a binfmt_misc handler with the F flag
# (the kernel opens the interpreter when it is registered, so it works inside
# the chroot without a copy of qemu there).  If no such handler is registered,
# this script registers Debian's (/usr/lib/binfmt.d/qemu-aarch64.conf, which
# systemd-binfmt would load at boot on a systemd host), mounting binfmt_misc
# first if needed.  The handler stays registered: it is host-wide.
# Also builds OUT/loader.cpio.gz: the initramfs that loads virtio-blk + ext4
# (modules in Debian's kernel) and switches to the root file system.
# The packages rprocd depends on that a minimal Debian lacks are deliberately
# not installed here: the guest's apt installs them (mkdebs.sh, systemd-test.sh).
# Usage: mkrootfs.sh OUTDIR
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(cd "$1" && pwd)
[ -f "$OUT/stamp.rootfs" ] && { echo "hwtest: rootfs cache is complete"; exit 0; }
KREL=$(cat "$OUT/kernel/release")
MODS=$OUT/kernel/root/lib/modules/$KREL
R=$OUT/rootfs
MIRROR=${HWTEST_MIRROR:-http://deb.debian.org}
die() { echo "hwtest: mkrootfs: $*" >&2; exit 1; }

# --- arm64 binaries on the host: binfmt_misc + qemu-aarch64 with the F flag.
BF=/proc/sys/fs/binfmt_misc
CONF=/usr/lib/binfmt.d/qemu-aarch64.conf
if [ ! -e "$BF/qemu-aarch64" ]; then
	[ -f "$CONF" ] || die "$CONF missing: install qemu-user-static (make hwtest-deps)"
	if [ ! -e "$BF/register" ]; then
		mount -t binfmt_misc binfmt_misc "$BF" ||
			die "cannot mount binfmt_misc on $BF (needs root, and a kernel/container that allows it)"
	fi
	grep -v '^#' "$CONF" > "$BF/register" || die "cannot register $CONF in $BF/register"
	echo "hwtest: registered the qemu-aarch64 binfmt handler ($CONF)"
fi
grep -qx enabled "$BF/qemu-aarch64" || die "the qemu-aarch64 binfmt handler is disabled ($BF/qemu-aarch64)"
grep -q '^flags:.*F' "$BF/qemu-aarch64" ||
	die "the qemu-aarch64 binfmt handler has no F flag (chroots cannot reach its interpreter): $(grep flags "$BF/qemu-aarch64")"

# Nothing may stay mounted in the tree (debootstrap mounts proc/sys in it; a
# failed run can leave them): unmount, deepest first, before removing.
umount_tree() {
	awk -v r="$R/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
}
trap umount_tree EXIT
umount_tree
rm -rf --one-file-system "$R"
T0=$(date +%s)
nice -n 10 debootstrap --arch=arm64 --variant=minbase \
	--include=systemd,systemd-sysv,udev,python3,procps,kmod \
	bookworm "$R" "$MIRROR/debian" > "$OUT/debootstrap.log" 2>&1 ||
	{ tail -30 "$OUT/debootstrap.log" "$R/debootstrap/debootstrap.log" 2>/dev/null; die "debootstrap failed (see $OUT/debootstrap.log)"; }
echo "hwtest: debootstrap (both stages, qemu-user) $(($(date +%s) - T0)) s"
umount_tree

# Kernel modules: the boot path, UIO (uio_pdrv_genirq built by fetch.sh); depmod in the tree.
D=$R/lib/modules/$KREL
rm -rf "$D" && mkdir -p "$D/extra"
(cd "$MODS" && tar -cf - modules.order modules.builtin modules.builtin.modinfo kernel/drivers/virtio \
	kernel/drivers/block/virtio_blk.ko kernel/drivers/uio kernel/fs/ext4 kernel/fs/jbd2 kernel/fs/mbcache.ko \
	kernel/lib/crc16.ko kernel/lib/libcrc32c.ko kernel/crypto/crc32c_generic.ko) | tar -xf - -C "$D"
cp "$OUT/kernel/uio_pdrv_genirq.ko" "$D/extra/"
chroot "$R" depmod -a "$KREL" || die "depmod in the tree failed"
mkdir -p "$R/etc/modprobe.d" "$R/etc/modules-load.d"
echo "options uio_pdrv_genirq of_id=generic-uio" > "$R/etc/modprobe.d/uio-pdrv-genirq.conf"
printf 'uio\nuio_pdrv_genirq\n' > "$R/etc/modules-load.d/uio.conf"
echo "/dev/vda / ext4 defaults 0 1" > "$R/etc/fstab"
echo hwtest > "$R/etc/hostname"
chroot "$R" apt-get clean
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
date -u > "$OUT/stamp.rootfs"
echo "hwtest: $OUT/rootfs.img ($(du -h "$OUT/rootfs.img" | cut -f1) used)"
