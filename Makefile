# rprocd developer entry points. See README.md ("Quick start", "Development") and docs/install.md.
#   make deps   what a fresh Debian 12 lacks: apt packages (root: sudo is used when not root),
#               then the project virtualenv .venv with the pinned tools of requirements/test.txt
#   make test   the whole test suite, in .venv (runs what `make deps` would when something is missing)
#   make run    the simulated remote and the daemon on a virtual board in ./.run (same)
#   make lint   ruff + mypy, in .venv
#   make lock   re-resolve requirements/test.in into requirements/test.txt (on purpose, then commit)
#   make deb    the Debian package, into dist/
#   make deb-install-check   install it on a minimal Debian 12 (debootstrap) and run debian/tests/smoke
#   make fresh-check   the README's two commands as a normal user in a fresh Debian 12 chroot (root;
#               FRESH_RUNS=N runs `make test` N times, FRESH_STRESS=K of them with both cores busy)
#   make bench  the benchmarks (python -m bench), when present

# Only `apt-get` needs root. As a normal user the apt step runs through sudo, and
# only when a package of APT_PACKAGES is missing; everything else stays in the tree.
#
# The virtualenv is made from Debian's own interpreter, named explicitly: on a
# machine where another python3 comes first in PATH (pyenv) the venv is the same.
# It does not see the system's site-packages, so the test and lint run depends
# only on requirements/test.txt, never on which python3-* packages apt installed.
# (Those are for the Debian package: tests run the packaged rprocd with
# /usr/bin/python3 and Debian's modules.)
VENV_PYTHON ?= /usr/bin/python3
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
LOCK ?= requirements/test.txt
RPROCD = $(VENV)/bin/rprocd
RPROCCTL = $(VENV)/bin/rprocctl
RUNDIR_BASE ?= .run
BOARD ?= $(RUNDIR_BASE)/board
RUNDIR ?= $(RUNDIR_BASE)/rprocd
DEBBUILD ?= build/deb
DIST ?= dist
PYTEST_ARGS ?=

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Every program the tests, the package build and `make fresh-check` call, one
# package a line (add yours here, or `APT_PACKAGES += ...` in an included .mk):
APT_PACKAGES = \
	python3 \
	python3-venv \
	python3-dev \
	make \
	git \
	gcc \
	libc6-dev \
	binutils \
	build-essential \
	mosquitto \
	mosquitto-clients \
	openssl \
	socat \
	procps \
	systemd \
	systemd-container \
	debootstrap \
	device-tree-compiler \
	linux-perf \
	debhelper \
	dh-python \
	pybuild-plugin-pyproject \
	python3-all \
	python3-setuptools \
	python3-pyudev \
	python3-periphery \
	python3-pyelftools \
	python3-systemd \
	lintian \
	man-db \
	groff-base \
	apt-utils \
	ca-certificates

.DEFAULT_GOAL := all

# Other targets (hardware tests) come from here; they may extend APT_PACKAGES.
-include hwtest/hwtest.mk

.PHONY: all deps ensure-deps apt-deps venv test run lint lock deb deb-install-check fresh-check bench clean distclean

all: test

deps: apt-deps venv

# the old name, for scripts and included .mk files that still use it
ensure-deps: deps

# apt-get only for what dpkg does not list as installed: a rerun costs one dpkg-query.
apt-deps:
	@installed=$$(dpkg-query -W -f='$${db:Status-Abbrev} $${Package}\n' $(APT_PACKAGES) 2>/dev/null \
		| awk '$$1 == "ii" {print $$2}'); \
	missing=; for p in $(APT_PACKAGES); do echo "$$installed" | grep -qx -- "$$p" || missing="$$missing $$p"; done; \
	[ -z "$$missing" ] && exit 0; \
	echo "make: apt packages missing:$$missing"; \
	if [ -n "$(SUDO)" ] && ! command -v $(SUDO) >/dev/null; then \
		echo "make: installing them needs root: run 'make deps' as root, or install sudo" >&2; exit 1; fi; \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update && \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing

venv: $(VENV)/.installed

# Made from scratch when the lock file changes, never otherwise; rprocd itself goes
# in again (editable, without dependencies: they all come from the lock) when
# pyproject.toml changes, and `pip check` proves the lock satisfies it.
$(VENV)/.locked: $(LOCK) | apt-deps
	rm -rf $(VENV)
	$(VENV_PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r $(LOCK)
	touch $@

$(VENV)/.installed: $(VENV)/.locked pyproject.toml
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(VENV)/bin/pip check
	touch $@

# Re-resolves the direct pins of requirements/test.in into a complete lock (every
# transitive package ==): run it when you mean to move a version, then commit both.
lock: | apt-deps
	rm -rf build/lock-venv
	$(VENV_PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/pip install --quiet --disable-pip-version-check -r requirements/test.in
	{ echo "# The complete, pinned test and lint environment (make lock, from requirements/test.in)."; \
	  build/lock-venv/bin/pip freeze --all --exclude pip | LC_ALL=C sort -f; } > $(LOCK)
	rm -rf build/lock-venv

# pytest exits non-zero on any failure, error, or when it collected nothing (exit 5).
test: deps
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)

lint: deps
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check rprocd tests bench hwtest
	$(PYTHON) -m mypy rprocd tests bench hwtest

# The simulated remote in the background, the daemon in the foreground; the
# remote goes when the daemon does (normal exit, Ctrl-C or a kill).
run: deps
	mkdir -p $(BOARD) $(RUNDIR)
	@echo "sockets: $(RUNDIR)/main/ept/   In another terminal:"
	@echo "  cd $(CURDIR) && . $(VENV)/bin/activate && export RPROCD_RUNTIME_DIR=\$$PWD/$(RUNDIR)"
	@echo "  rprocctl endpoints"
	$(RPROCCTL) sim --board $(BOARD) & sim=$$!; \
	trap 'kill $$sim 2>/dev/null; wait $$sim 2>/dev/null' EXIT INT TERM; \
	$(RPROCD) --board $(BOARD) --runtime-dir $(RUNDIR)

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

# A fresh Debian 12 (debootstrap, cached in $(FRESH_ROOT)), a clone of this
# commit in it, and a normal user with sudo who runs exactly the README's
# `make run` (with its second-terminal commands) and `make test`. Root; see
# tools/fresh-check.sh. FRESH_RUNS=5 FRESH_STRESS=2: five `make test` in a row,
# the last two with both cores kept busy.
FRESH_ROOT ?= build/fresh-root
FRESH_RUNS ?= 1
FRESH_STRESS ?= 0
fresh-check:
	FRESH_ROOT=$(FRESH_ROOT) FRESH_RUNS=$(FRESH_RUNS) FRESH_STRESS=$(FRESH_STRESS) tools/fresh-check.sh

# Builds bench/*.c into bench/out/ (gcc -O2) and runs every figure; see bench/README.md.
# BENCH_ARGS=--quick for the short mode, --profile DIR to record the daemon's profile.
bench: deps
	$(PYTHON) -m bench $(BENCH_ARGS)

# The fresh-check root is root's; it is only removed when nothing is mounted in it.
clean:
	rm -rf $(DEBBUILD) $(CHROOT) $(RUNDIR_BASE) build/lock-venv
	@if grep -qs " $(abspath $(FRESH_ROOT))/" /proc/mounts; then \
		echo "make: $(FRESH_ROOT) has mounts (a fresh-check running?); not removed" >&2; exit 1; fi
	$(if $(wildcard $(FRESH_ROOT)),$(SUDO) rm -rf --one-file-system $(FRESH_ROOT))

# clean, and the virtualenv
distclean: clean
	rm -rf $(VENV)
