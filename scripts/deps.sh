#!/bin/sh
# Installs what husk needs and this machine lacks, with apt, and prepares the
# kernel interfaces the runtimes expect. Safe to run again: it only acts on
# what is missing. Usage: scripts/deps.sh [bench|node-e2e]
set -eu

need=""
want() { need="$need $1"; }
command -v runc >/dev/null 2>&1 || want runc
command -v crun >/dev/null 2>&1 || want crun
[ -x /usr/lib/cni/bridge ] || [ -x /opt/cni/bin/bridge ] || want containernetworking-plugins
command -v iptables >/dev/null 2>&1 || want iptables
command -v ip >/dev/null 2>&1 || want iproute2
command -v nsenter >/dev/null 2>&1 || want util-linux
[ -x /bin/busybox ] || want busybox-static
if [ "${1:-}" = bench ] || [ "${1:-}" = node-e2e ]; then
	command -v containerd >/dev/null 2>&1 || want containerd
	command -v catatonit >/dev/null 2>&1 || want catatonit
	command -v gcc >/dev/null 2>&1 || want gcc
	[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -e /usr/lib/aarch64-linux-gnu/libc.a ] || want libc6-dev
fi
if [ "${1:-}" = node-e2e ]; then
	command -v curl >/dev/null 2>&1 || want curl
	command -v python3 >/dev/null 2>&1 || want python3
	command -v iptables-save >/dev/null 2>&1 || want iptables
fi
if [ -n "$need" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "deps: missing:$need; run as root to install them" >&2
		exit 1
	fi
	echo "deps: installing$need"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
if ! command -v go >/dev/null 2>&1; then
	echo "deps: Go 1.26 is required (https://go.dev/dl); it is not on PATH" >&2
	exit 1
fi

# crun refuses a hybrid cgroup layout (v1 controllers + unified) unless
# hugetlb has a v1 hierarchy; mount one when the kernel has the controller
# and nothing mounted it.
if [ "$(id -u)" = 0 ] && [ -d /sys/fs/cgroup/memory ] && grep -qw hugetlb /proc/cgroups &&
	! grep -qE ' - cgroup [^ ]+ [^ ]*hugetlb' /proc/self/mountinfo; then
	mkdir -p /sys/fs/cgroup/hugetlb
	mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb && echo "deps: mounted the hugetlb cgroup v1 hierarchy (crun needs it here)"
fi
