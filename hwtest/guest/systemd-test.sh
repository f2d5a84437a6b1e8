#!/bin/sh
# The full bed's guest side, run by hwtest.service under systemd (PID 1).
say() { echo "HWTEST $*"; }
say "systemd boot uptime=$(cut -d' ' -f1 /proc/uptime) pid1=$(cat /proc/1/comm)"
for u in /sys/class/uio/uio*; do
	say "uio $(basename "$u") name=$(cat "$u/name") addr=$(cat "$u/maps/map0/addr") size=$(cat "$u/maps/map0/size")"
done
grep -E 'rpmsg_shm|mbox' /proc/interrupts | sed 's/^/HWTEST irq /'
# The negative control, before the package is installed (see init.sh for the marks).
n=1
for m in aligned unaligned dczva; do
	/opt/hwtest/negctl mark $n
	/opt/hwtest/negctl $m
	say "negctl $m rc=$?"
	n=$((n + 1))
done
/opt/hwtest/negctl mark $n
export DEBIAN_FRONTEND=noninteractive
# The board's config is provisioned first, as an admin would; dpkg keeps it (confold).
mkdir -p /etc/rprocd
cp /opt/hwtest/rprocd.toml /etc/rprocd/rprocd.toml
# Debian's archive, as a user's apt has it, is here a flat repository of the Debian packages
# rprocd depends on (downloaded by fetch.sh; the guest has no network): apt resolves the
# dependencies of the .deb from it.
rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*
echo "deb [trusted=yes] file:/opt/hwtest/debs ./" > /etc/apt/sources.list.d/hwtest.list
if apt-get update -q > /tmp/apt.log 2>&1 &&
	apt-get install -y -q -o Dpkg::Options::=--force-confold /opt/hwtest/debs/rprocd_*_arm64.deb >> /tmp/apt.log 2>&1; then
	say "apt install ok $(dpkg-query -W -f '${Package} ${Version} ${Architecture}' rprocd)"
	say "apt pulled in: $(sed -n 's/^Setting up \([^ ]*\) .*/\1/p' /tmp/apt.log | tr '\n' ' ')"
	# the package's own arm64 helpers load (an amd64 leftover would mean the Python fallbacks)
	say "native: $(python3 -c 'from rprocd import memory; from rprocd.native import sockio; print(memory.PATH, "|", sockio.KIND)' 2>&1)"
else
	sed 's/^/HWTEST apt: /' /tmp/apt.log | tail -20
	say "FAIL apt install"
fi
systemctl is-enabled rprocd | sed 's/^/HWTEST unit enabled: /'
for d in /dev/uio*; do say "devnode $(stat -c '%n %G %a' "$d") name=$(cat /sys/class/uio/$(basename "$d")/name)"; done
useradd -M -s /bin/false -G rprocd hwclient
cd /
python3 /opt/hwtest/bedtest.py systemd
say "exit rc=$?"
systemctl poweroff --force --force
