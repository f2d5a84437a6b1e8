# The arm64 QEMU test bed (docs/hwtest.md).  Included by the Makefile:
#   -include hwtest/hwtest.mk
# make hwtest          the full run under systemd: the package installed with apt (Must-show list of issue 12)
# make hwtest-full     the same checks on the initramfs guest (rprocd from this checkout, no systemd)
# make hwtest-short    boot, attach, 100 echoes, the negative control (CI size)
# Everything it fetches or builds is under build/hwtest/ (make clean removes it: hwtest-clean).
HWTEST_OUT ?= build/hwtest
HWTEST_SRC := hwtest
HWTEST_HOST_PACKAGES := qemu-system-arm gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
	device-tree-compiler cpio libglib2.0-dev pkg-config qemu-user-static debootstrap dpkg-dev
# The interpreter of the host side (simulated remote, bridge, driver): the project's venv
# when included by the Makefile, else python3.
HWTEST_PYTHON ?= $(if $(PYTHON),$(PYTHON),python3)
HWTEST_SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
HWTEST_BACKPORTS := /etc/apt/sources.list.d/rprocd-hwtest-backports.list

# Host packages; QEMU 10 from bookworm-backports (docs/hwtest.md says why: the second PL011 of
# virt, qemu_plugin_read_register), without recommends (it then upgrades only the qemu-system
# packages). Nothing happens when all is there.
.PHONY: hwtest-deps
hwtest-deps:
	@if ! dpkg-query -W -f='$${db:Status-Abbrev}\n' $(HWTEST_HOST_PACKAGES) 2>/dev/null | grep -qv '^ii' \
		&& dpkg-query -W -f='$${db:Status-Abbrev}\n' $(HWTEST_HOST_PACKAGES) >/dev/null 2>&1 \
		&& dpkg --compare-versions "$$(dpkg-query -W -f='$${Version}' qemu-system-arm)" ge 1:10; then \
		echo "hwtest: host packages present"; \
	else \
		echo "deb http://deb.debian.org/debian bookworm-backports main" | $(HWTEST_SUDO) tee $(HWTEST_BACKPORTS) >/dev/null; \
		$(HWTEST_SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q; \
		$(HWTEST_SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			-t bookworm-backports $(HWTEST_HOST_PACKAGES); \
	fi

$(HWTEST_OUT)/stamp.fetch: $(HWTEST_SRC)/fetch.sh $(HWTEST_SRC)/userland.list $(HWTEST_SRC)/userland-all.list $(HWTEST_SRC)/userland.exclude
	rm -f $@
	HWTEST_OUT=$(HWTEST_OUT) sh $(HWTEST_SRC)/fetch.sh

$(HWTEST_OUT)/devmem_check.so: $(HWTEST_SRC)/plugin/devmem_check.c $(HWTEST_OUT)/stamp.fetch
	nice -n 10 gcc -O2 -Wall -Wextra -Wno-unused-parameter -shared -fPIC \
		$$(pkg-config --cflags glib-2.0) -I$(HWTEST_OUT) -o $@ $<

$(HWTEST_OUT)/bed.dtb: $(HWTEST_SRC)/bed.dtsi $(HWTEST_SRC)/mkdtb.sh $(HWTEST_SRC)/qemu-args.sh
	mkdir -p $(HWTEST_OUT)
	sh $(HWTEST_SRC)/mkdtb.sh $(HWTEST_OUT)

# Rebuilt every run (about 10 s): it carries this checkout's rprocd.
.PHONY: hwtest-initrd
hwtest-initrd: $(HWTEST_OUT)/stamp.fetch
	sh $(HWTEST_SRC)/mkinitrd.sh $(HWTEST_OUT)

.PHONY: hwtest-build hwtest hwtest-short hwtest-full hwtest-rootfs hwtest-debs
hwtest-build: $(HWTEST_OUT)/stamp.fetch $(HWTEST_OUT)/devmem_check.so $(HWTEST_OUT)/bed.dtb hwtest-initrd

hwtest-short: hwtest-build
	$(HWTEST_PYTHON) $(HWTEST_SRC)/run.py --out $(HWTEST_OUT) --mode short

hwtest-full: hwtest-build
	$(HWTEST_PYTHON) $(HWTEST_SRC)/run.py --out $(HWTEST_OUT) --mode full

# The systemd guest: debootstrap on the host under qemu-user (once, cached) and the package from `make deb`.
hwtest-rootfs: hwtest-build
	sh $(HWTEST_SRC)/mkrootfs.sh $(HWTEST_OUT)

hwtest-debs: deb hwtest-build
	sh $(HWTEST_SRC)/mkdebs.sh $(HWTEST_OUT)

hwtest: hwtest-rootfs hwtest-debs
	$(HWTEST_PYTHON) $(HWTEST_SRC)/run.py --out $(HWTEST_OUT) --mode systemd --timeout 1800

# make clean removes the bed's cache too (the rootfs tree is root's); never while something is
# mounted in it (a mkrootfs.sh running: debootstrap mounts proc and sys in the tree).
.PHONY: hwtest-clean
clean: hwtest-clean
hwtest-clean:
	@if grep -qs " $(abspath $(HWTEST_OUT))/" /proc/mounts; then \
		echo "make: $(HWTEST_OUT) has mounts (mkrootfs.sh running?); not removed" >&2; exit 1; fi
	$(if $(wildcard $(HWTEST_OUT)),$(HWTEST_SUDO) rm -rf --one-file-system $(HWTEST_OUT))
