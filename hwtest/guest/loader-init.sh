#!/bin/busybox sh
# Loader initramfs of the systemd guest: load virtio-blk and ext4 (modules in
# Debian's kernel), mount the root, copy the run's payload in, switch to it.
/bin/busybox mkdir -p /proc /dev /sys /newroot
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t devtmpfs devtmpfs /dev
for m in crc16 crc32c_generic libcrc32c mbcache jbd2 ext4 virtio_mmio virtio_blk; do insmod /mods/$m.ko; done
INIT=/sbin/init
for arg in $(cat /proc/cmdline); do case $arg in hwtest.init=*) INIT=${arg#*=};; esac; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mkdir -p /newroot
mount -t ext4 /dev/vda /newroot || { echo "HWTEST FAIL loader: cannot mount /dev/vda"; poweroff -f; }
if [ -d /payload ]; then
	mkdir -p /newroot/opt/hwtest && cp -a /payload/. /newroot/opt/hwtest/
	[ -d /payload/systemd ] && cp -a /payload/systemd/. /newroot/etc/systemd/system/
fi
umount /proc
umount /dev
exec switch_root /newroot "$INIT"
