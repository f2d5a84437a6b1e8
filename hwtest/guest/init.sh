#!/bin/busybox sh
# PID 1 of the bed's initramfs (short version): bring up the real UIO driver,
# run the negative control, then rprocd and the client checks (bedtest.py).
# Lines starting with "HWTEST " are read by hwtest/run.py on the console.
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p /proc /sys /dev /tmp /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
ip link set lo up 2>/dev/null
for arg in $(cat /proc/cmdline); do case $arg in hwtest.mode=*) MODE=${arg#*=};; esac; done
echo "HWTEST boot uptime=$(cut -d' ' -f1 /proc/uptime) mode=${MODE:-short}"
insmod /lib/hwtest/uio.ko && insmod /lib/hwtest/uio_pdrv_genirq.ko of_id=generic-uio
for u in /sys/class/uio/uio*; do
	echo "HWTEST uio $(basename "$u") name=$(cat "$u/name") addr=$(cat "$u/maps/map0/addr") size=$(cat "$u/maps/map0/size") dev=$(stat -c '%t:%T' /dev/$(basename "$u"))"
done
grep -E 'rpmsg_shm|mbox' /proc/interrupts | sed 's/^/HWTEST irq /'
grep -i -E '60000000|reserved' /proc/iomem | sed 's/^/HWTEST iomem /'
# The negative control, each case between two marks the detector logs:
# MARK 1 aligned MARK 2 unaligned MARK 3 dczva MARK 4; after MARK 4 only rprocd runs.
n=1
for m in aligned unaligned dczva; do
	/lib/hwtest/negctl mark $n
	/lib/hwtest/negctl $m
	echo "HWTEST negctl $m rc=$?"
	n=$((n + 1))
done
/lib/hwtest/negctl mark $n
cd /opt/rprocd
python3 /lib/hwtest/bedtest.py "${MODE:-short}"
echo "HWTEST exit rc=$?"
sync
poweroff -f
