# rprocd developer entry points. See docs/install.md.
#   make deps   install what a fresh Debian 12 lacks (apt-get + pip; root or sudo)
#   make test   the whole test suite (runs `make deps` first when something is missing)
#   make run    the simulated remote and the daemon on a virtual board in ./.run (same)
#   make lint   ruff + mypy
#   make deb    the Debian package, into dist/
#   make deb-install-check   install it on a minimal Debian 12 (debootstrap) and run debian/tests/smoke
#   make bench  the benchmarks (python3 -m bench), when present

PYTHON ?= python3
RUNDIR_BASE ?= .run
BOARD ?= $(RUNDIR_BASE)/board
RUNDIR ?= $(RUNDIR_BASE)/rprocd
DEBBUILD ?= build/deb
DIST ?= dist

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Everything the test suite and the package build use: the broker and TLS
# tools other tests start themselves (mosquitto is run as a binary by the
# tests, never as a service), a C compiler and binutils (objcopy), the
# packaging chain and its checkers, systemd for systemd-analyze, and
# Debian's Python modules the package depends on (the packaging test runs
# the packaged rprocd with /usr/bin/python3).
APT_PACKAGES = \
	mosquitto mosquitto-clients openssl gcc libc6-dev binutils make git \
	build-essential debhelper dh-python pybuild-plugin-pyproject \
	python3-all python3-setuptools python3-pip python3-venv \
	python3-pyudev python3-periphery python3-pyelftools python3-systemd \
	lintian systemd man-db groff-base apt-utils debootstrap

.PHONY: all deps ensure-deps test run lint deb deb-install-check bench clean

all: test

deps:
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(APT_PACKAGES)
	# Debian's own python3 refuses pip installs (PEP 668) unless told; pyenv's does not care.
	PIP_BREAK_SYSTEM_PACKAGES=1 $(PYTHON) -m pip install -e '.[test,fast]'

# `make deps` only when something it provides is missing: a quick look at
# dpkg's database, the console scripts and the test modules.
ensure-deps:
	@if ! st=$$(dpkg-query -W -f='$${db:Status-Abbrev}\n' $(APT_PACKAGES) 2>/dev/null) \
		|| echo "$$st" | grep -qv '^ii' \
		|| ! command -v rprocd rprocctl >/dev/null \
		|| ! $(PYTHON) -c 'import pytest, pytest_timeout, hypothesis' 2>/dev/null; then \
		echo "make: installing what is missing (make deps)"; $(MAKE) deps; fi

test: ensure-deps
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check rprocd tests bench
	$(PYTHON) -m mypy rprocd tests bench

# The simulated remote in the background, the daemon in the foreground; the
# remote goes when the daemon does (normal exit, Ctrl-C or a kill).
run: ensure-deps
	mkdir -p $(BOARD) $(RUNDIR)
	@echo "sockets: $(RUNDIR)/main/ept/  (another shell: export RPROCD_RUNTIME_DIR=$(abspath $(RUNDIR)); rprocctl endpoints)"
	rprocctl sim --board $(BOARD) & sim=$$!; \
	trap 'kill $$sim 2>/dev/null; wait $$sim 2>/dev/null' EXIT INT TERM; \
	rprocd --board $(BOARD) --runtime-dir $(RUNDIR)

# Built from a copy of the tree (tracked files and new ones not ignored), so
# that the work tree gets no build products; with Debian's own Python and
# tools (a pyenv python3 earlier in PATH must not be seen by dh-python).
deb:
	rm -rf $(DEBBUILD)
	mkdir -p $(DEBBUILD)/src $(DIST)
	rm -f $(DIST)/rprocd*.deb
	git ls-files -z --cached --others --exclude-standard \
		| tar --null --files-from=- --ignore-failed-read -cf - | tar -xf - -C $(DEBBUILD)/src
	cd $(DEBBUILD)/src && env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$$HOME" LC_ALL=C.UTF-8 \
		$${DEB_BUILD_OPTIONS:+DEB_BUILD_OPTIONS="$$DEB_BUILD_OPTIONS"} \
		dpkg-buildpackage -us -uc -b
	cp $(DEBBUILD)/*.deb $(DIST)/
	@ls -1 $(DIST)/*.deb

# The package on a plain, minimal Debian 12 (only Debian's archive needed; root;
# a few minutes): apt resolves its dependencies, the maintainer scripts run,
# and the autopkgtest smoke test passes in the chroot.
CHROOT ?= build/chroot
deb-install-check: deb
	rm -rf $(CHROOT)
	debootstrap --variant=minbase bookworm $(CHROOT)
	cp $(DIST)/rprocd_*.deb debian/tests/smoke $(CHROOT)/tmp/
	chroot $(CHROOT) sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q /tmp/rprocd_*.deb && AUTOPKGTEST_TMP=$$(mktemp -d) sh /tmp/smoke'
	rm -rf $(CHROOT)

# Builds bench/*.c into bench/out/ (gcc -O2) and runs every figure; see bench/README.md.
# BENCH_ARGS=--quick for the short mode, --profile DIR to record the daemon's profile.
bench:
	$(PYTHON) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(DEBBUILD) $(CHROOT) $(RUNDIR_BASE)
