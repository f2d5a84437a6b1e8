#!/bin/bash
# make fresh-check: the README's quick start as a new user on a fresh Debian 12.
#
# A debootstrap of Debian 12 (minbase + git, make, ca-certificates, sudo) is
# made once and cached in $FRESH_ROOT/base; every check copies it, so each
# check starts on a machine where nothing of rprocd's is installed. Into the
# copy: the host's CA trust store (pip must reach the index through this
# machine's proxy), a clone of the current commit, and a normal user `dev`
# with sudo. As that user, in that chroot, it runs exactly the README's two
# commands: `make run` for a few seconds, with the README's second-terminal
# commands (its block after "In a second terminal:"), then `make test`, and
# prints the time of each. FRESH_RUNS=N runs `make test` N times in a row, the
# last FRESH_STRESS of them with every core kept busy by `yes` processes.
# Exits non-zero on any failure; a pytest summary with anything but "passed"
# (failed, error, skipped, xfailed, no tests) is a failure.
#
# Root (debootstrap, chroot, mounts). The mounts are made in a private mount
# namespace (unshare), so they vanish with this script even if it is killed;
# the EXIT trap unmounts them and ends what is left running in the chroot.
# Apt's downloaded .debs are kept in $FRESH_ROOT/apt-archives between checks
# (FRESH_APT_CACHE=0 to download everything again): only the download is
# cached, every package is still installed from scratch.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
FRESH_ROOT=$(realpath -m "${FRESH_ROOT:-$REPO/build/fresh-root}")
FRESH_RUNS=${FRESH_RUNS:-1}
FRESH_STRESS=${FRESH_STRESS:-0}
FRESH_APT_CACHE=${FRESH_APT_CACHE:-1}
FRESH_RUN_SECONDS=${FRESH_RUN_SECONDS:-5}
MIRROR=${FRESH_MIRROR:-http://deb.debian.org/debian}
USERNAME=dev
LOGS=$FRESH_ROOT/logs

say() { printf '[fresh-check %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { say "FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mounts): sudo make fresh-check"
[[ $FRESH_RUNS =~ ^[1-9][0-9]*$ ]] || die "FRESH_RUNS=$FRESH_RUNS: a count of 1 or more"
[[ $FRESH_STRESS =~ ^[0-9]+$ ]] && [ "$FRESH_STRESS" -le "$FRESH_RUNS" ] ||
	die "FRESH_STRESS=$FRESH_STRESS: a count of 0 to FRESH_RUNS ($FRESH_RUNS)"
for tool in debootstrap unshare chroot git; do
	command -v $tool >/dev/null || die "$tool not found (make deps installs it)"
done

if [ -z "${FRESH_CHECK_UNSHARED:-}" ]; then
	export FRESH_CHECK_UNSHARED=1
	exec unshare --mount --propagation private "$0" "$@"
fi

BASE=$FRESH_ROOT/base
R=$FRESH_ROOT/work
mkdir -p "$FRESH_ROOT" "$LOGS"

# --- cleanup: stop what runs in the chroot, unmount (deepest first) --------------------------
stressors=()
run_pid="" test_pid=""
cleanup() {
	local rc=$?
	for p in "${stressors[@]}"; do kill "$p" 2>/dev/null || true; done
	for g in ${run_pid:-} ${test_pid:-}; do kill -KILL -- "-$g" 2>/dev/null || true; done
	if [ -d "$R" ]; then
		for proc in /proc/[0-9]*; do
			[ "$(readlink "$proc/root" 2>/dev/null)" = "$R" ] && kill -KILL "${proc#/proc/}" 2>/dev/null || true
		done
		grep -o " $R/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" || true; done
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the cached Debian 12 ------------------------------------------------------------------
if [ ! -d "$BASE" ]; then
	say "debootstrap Debian 12 (minbase + git make ca-certificates sudo) into $BASE (once; cached)"
	rm -rf --one-file-system "$BASE.tmp"
	t0=$SECONDS
	nice -n 10 debootstrap --variant=minbase --include=git,make,ca-certificates,sudo \
		bookworm "$BASE.tmp" "$MIRROR" >"$LOGS/debootstrap.log" 2>&1 ||
		{ tail -20 "$LOGS/debootstrap.log"; die "debootstrap (log: $LOGS/debootstrap.log)"; }
	mv "$BASE.tmp" "$BASE"
	say "debootstrap: $((SECONDS - t0)) s"
fi

say "a fresh copy of the cached root: $R"
rm -rf --one-file-system "$R"
cp -a "$BASE" "$R"

# What a Debian 12 install has and debootstrap does not write: the updates and
# security suites, a hosts file, a resolver. No service starts inside (a chroot
# has no init; mosquitto's package must not start a broker on the host's port).
cat >"$R/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' "$(hostname)" >"$R/etc/hosts"
cp -L /etc/resolv.conf "$R/etc/resolv.conf"
printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"
chmod 755 "$R/usr/sbin/policy-rc.d"

# The host's trust store: its local CAs (kept by update-ca-certificates when a
# package triggers it later) and the bundle itself.
if [ -d /usr/local/share/ca-certificates ]; then
	cp -a /usr/local/share/ca-certificates/. "$R/usr/local/share/ca-certificates/"
fi

# --- mounts ---------------------------------------------------------------------------------
# The root a mount point, as / is on a machine (unshare --propagation, which nspawn's test
# uses, fails with EINVAL on a root that is only a directory).
mount --bind "$R" "$R"
mount -t proc proc "$R/proc"
mount -t sysfs -o ro sysfs "$R/sys"
# What a booted Debian 12 has under /sys and a new sysfs mount lacks: the cgroup
# hierarchies (systemd mounts them; nspawn needs them) and tracefs (perf's tracepoints).
mount --rbind /sys/fs/cgroup "$R/sys/fs/cgroup"
if [ -d /sys/kernel/tracing ]; then mount -t tracefs tracefs "$R/sys/kernel/tracing"; fi
mount --bind /dev "$R/dev"
mount --bind /dev/pts "$R/dev/pts"
mount -t tmpfs -o mode=1777 shm "$R/dev/shm"
mount -t tmpfs -o mode=755 run "$R/run"
mount -t tmpfs -o mode=1777 tmp "$R/tmp"
if [ "$FRESH_APT_CACHE" = 1 ]; then
	mkdir -p "$FRESH_ROOT/apt-archives/partial"
	mount --bind "$FRESH_ROOT/apt-archives" "$R/var/cache/apt/archives"
	rm -f "$R/etc/apt/apt.conf.d/docker-clean"
	echo 'Binary::apt::APT::Keep-Downloaded-Packages "true";' >"$R/etc/apt/apt.conf.d/10keep-debs"
fi

# A process of group $1 that has not ended (kill -0 also counts an unreaped zombie).
group_alive() { ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ {found = 1} END {exit !found}'; }

# ARGS... with $R as the root of a mount namespace of their own (pivot_root), as / is on a
# machine, not a chroot: in a chroot, systemd-nspawn (tests/test_systemd.py) boots a container
# whose namespaces nsenter cannot enter ("System has not been booted with systemd"); measured.
# One process throughout (each step execs the next), so signals reach the command.
mkdir -p "$R/.old-root"
enter_root() {
	unshare --mount --propagation private -- /bin/sh -c \
		'cd "$1" && shift && pivot_root . .old-root && exec chroot . /bin/sh -c "umount -l /.old-root && exec \"\$@\"" sh "$@"' \
		sh "$R" "$@"
}
in_root() { enter_root /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 "$@"; }
in_root update-ca-certificates >/dev/null 2>&1
cp /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/ca-certificates.crt"

# --- a normal user with sudo, and the clone -------------------------------------------------
in_root useradd --create-home --shell /bin/bash --groups sudo "$USERNAME"
echo "$USERNAME ALL=(ALL:ALL) NOPASSWD: ALL" >"$R/etc/sudoers.d/$USERNAME"
chmod 440 "$R/etc/sudoers.d/$USERNAME"

commit=$(git -c safe.directory="*" -C "$REPO" rev-parse HEAD)
git -c safe.directory="*" -C "$REPO" diff --quiet HEAD || say "note: the work tree has uncommitted changes; checking the commit $commit"
git -c safe.directory="*" -C "$REPO" bundle create "$R/tmp/rprocd.bundle" HEAD 2>/dev/null
chmod 644 "$R/tmp/rprocd.bundle"

# As the user, in a login shell with a normal user's environment (no /usr/sbin in PATH).
# chroot --userspec execs the shell itself (no su-like parent), so a signal to the
# process group reaches make and what it runs, as a Ctrl-C in a terminal would.
user_env=(/usr/bin/env -i HOME=/home/$USERNAME USER=$USERNAME LOGNAME=$USERNAME SHELL=/bin/bash
	LANG=C.UTF-8 TERM=dumb PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games)
as_user() { enter_root chroot --userspec="$USERNAME:$USERNAME" / "${user_env[@]}" /bin/bash -lc "$1"; }
as_user "git -c advice.detachedHead=false clone --quiet /tmp/rprocd.bundle ~/rprocd && cd ~/rprocd && git -c advice.detachedHead=false checkout --quiet $commit"
say "cloned $commit into /home/$USERNAME/rprocd"

# --- the README's second-terminal block ----------------------------------------------------
# The first ```sh block after the line with "second terminal".
second=$(awk '/second terminal/ {seen = 1} seen && /^```sh/ {inb = 1; next} inb && /^```/ {exit} inb' "$REPO/README.md")
[ -n "$second" ] || die "README.md: no sh block after \"second terminal\""

# --- 1. make run, and the second terminal ---------------------------------------------------
say "as $USERNAME: make run (the README's first command)"
t0=$SECONDS
set -m # its own process group, where SIGINT is not ignored (job control)
as_user "cd ~/rprocd && exec make run" </dev/null >"$LOGS/make-run.log" 2>&1 &
run_pid=$!
set +m
ept=$R/home/$USERNAME/rprocd/.run/rprocd/main/ept
want="rpmsg-client-sample rpmsg-sink rpmsg-source rpmsg-tty"
until [ "$(ls "$ept" 2>/dev/null | sort | xargs)" = "$want" ]; do
	group_alive $run_pid || { tail -30 "$LOGS/make-run.log"; die "make run ended before the endpoints appeared"; }
	[ $((SECONDS - t0)) -lt 3600 ] || die "make run: no endpoints after an hour"
	sleep 1
done
run_time=$((SECONDS - t0))
say "make run: the four endpoints after ${run_time} s (installing included)"
sleep "$FRESH_RUN_SECONDS"

say "as $USERNAME, in a second terminal: the README's commands"
# One line a command, comments cut; the lines that set the shell up (`. activate`,
# export, cd) run again before each later command, as they would in one terminal.
commands=()
setup=""
while IFS= read -r line; do
	cmd=${line%%#*}
	cmd=${cmd%"${cmd##*[![:space:]]}"}
	[ -n "$cmd" ] && commands+=("$cmd")
done <<<"$second"
fails=0
set +e # each command's failure is counted, not fatal
for cmd in "${commands[@]}"; do
	case $cmd in
	*listen*) limit=5 ;; # runs until interrupted: it must still be running when stopped
	*) limit=30 ;;
	esac
	case $cmd in
	export\ * | .\ * | source\ * | cd\ *)
		out=$(as_user "cd ~/rprocd && $setup $cmd" </dev/null 2>&1)
		rc=$?
		setup="$setup $cmd &&"
		;;
	*)
		out=$(as_user "cd ~/rprocd && $setup timeout $limit $cmd" </dev/null 2>&1)
		rc=$?
		;;
	esac
	printf '  $ %s    (exit %d)\n%s\n' "$cmd" $rc "$(printf '%s\n' "$out" | sed 's/^/    /')"
	case $cmd in
	export\ * | .\ * | source\ * | cd\ *) ok=$([ $rc = 0 ] && echo y) ;;
	*listen*) ok=$([ $rc = 124 ] && echo y) ;;
	*" endpoints"*) ok=$([ $rc = 0 ] && for e in $want; do grep -qw -- "$e" <<<"$out" || exit; done && echo y) ;;
	*"send rpmsg-client-sample hello"*) ok=$([ $rc = 0 ] && [ "$out" = hello ] && echo y) ;;
	*"send rpmsg-source"*) ok=$([ $rc = 0 ] && [ "$(printf '%s\n' "$out" | grep -c .)" = 3 ] && echo y) ;;
	*) ok=$([ $rc = 0 ] && echo y) ;;
	esac
	[ -n "$ok" ] || { say "FAIL: '$cmd' (exit $rc)"; fails=$((fails + 1)); }
done
set -e

say "stopping make run (Ctrl-C: SIGINT to its process group)"
kill -INT -- -$run_pid 2>/dev/null || true
for _ in $(seq 100); do group_alive $run_pid || break; sleep 0.1; done
if group_alive $run_pid; then
	say "FAIL: make run still running 10 s after Ctrl-C"
	fails=$((fails + 1))
	kill -KILL -- -$run_pid 2>/dev/null || true
fi
wait $run_pid 2>/dev/null || true
if [ -n "$(ls -A "$ept" 2>/dev/null)" ]; then
	say "FAIL: endpoint sockets left after Ctrl-C: $(ls "$ept" | xargs)"
	fails=$((fails + 1))
fi
[ "$fails" = 0 ] || { tail -30 "$LOGS/make-run.log"; die "make run: $fails problem(s) (log: $LOGS/make-run.log)"; }

# --- 2. make test, FRESH_RUNS times ---------------------------------------------------------
summaries=()
failed_runs=0
for i in $(seq 1 "$FRESH_RUNS"); do
	load=""
	if [ "$i" -gt $((FRESH_RUNS - FRESH_STRESS)) ]; then
		for _ in $(seq "$(nproc)"); do
			yes >/dev/null &
			stressors+=($!)
		done
		load=", every core busy ($(nproc) x yes)"
	fi
	say "as $USERNAME: make test (the README's second command), run $i of $FRESH_RUNS$load"
	t0=$SECONDS
	set +e
	set -m # its own process group, for the cleanup
	as_user "cd ~/rprocd && make test" </dev/null >"$LOGS/make-test-$i.log" 2>&1 &
	test_pid=$!
	set +m
	wait $test_pid
	rc=$?
	test_pid=
	set -e
	t=$((SECONDS - t0))
	for p in "${stressors[@]}"; do kill "$p" 2>/dev/null || true; done
	stressors=()
	summary=$(grep -E '(passed|failed|errors?|skipped|no tests ran).* in [0-9.]+s' "$LOGS/make-test-$i.log" | tail -1 || true)
	summary=${summary:-"(no pytest summary)"}
	bad=""
	[ $rc = 0 ] || bad="exit $rc"
	echo "$summary" | grep -Eq '[0-9]+ passed' || bad="${bad:+$bad; }nothing passed"
	echo "$summary" | grep -Eq 'failed|error|skipped|xfail|xpass|deselected|no tests' && bad="${bad:+$bad; }not all passed"
	# the run after `make run` and every later one install nothing
	grep -Eq '^(make: apt packages missing|\S*python3? -m venv|\S*/pip install)' "$LOGS/make-test-$i.log" && bad="${bad:+$bad; }it installed something again"
	summaries+=("run $i$load: ${t} s: $summary${bad:+  <- FAIL: $bad}")
	say "make test run $i: ${t} s: $summary${bad:+  FAIL: $bad}"
	if [ -n "$bad" ]; then
		failed_runs=$((failed_runs + 1))
		grep -E '^(FAILED|ERROR) ' "$LOGS/make-test-$i.log" | sed 's/^/    /' || true
		tail -5 "$LOGS/make-test-$i.log" | sed 's/^/    /'
	fi
done

say "summary (logs in $LOGS):"
say "  make run: endpoints after ${run_time} s; the README's second-terminal commands all as documented"
for s in "${summaries[@]}"; do say "  make test $s"; done
[ "$failed_runs" = 0 ] || die "$failed_runs of $FRESH_RUNS make test runs not green"
say "OK"
