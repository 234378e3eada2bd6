#!/bin/bash
# make node-e2e: the Kubernetes node conformance suite (e2e_node.test,
# [NodeConformance] and the [Feature:...] specs of what husk supports) against
# one runtime started here with its own dirs, socket, CNI network, pid file and
# cgroup, with test images from a local registry. Ends with one line
# `node-e2e: N passed, N failed, N skipped`; the reports are in $RESULTS.
#
# Env: NODE_E2E_RUNTIME  husk-runc (default), husk-crun or containerd
#      NODE_E2E_PROCS    parallel ginkgo processes (default 8)
#      NODE_E2E_FOCUS    a ginkgo focus regex in place of the default selection
#      NODE_E2E_KEEP=1   keep the runtime's dirs after the run
#      NODE_E2E_CACHE, NODE_E2E_RESULTS, NODE_E2E_REGISTRY_PORT (5055), NODE_E2E_SUBNET (10.100.0.0/16)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=versions.env
. "$HERE/versions.env"
RUNTIME=${NODE_E2E_RUNTIME:-husk-runc}
CACHE=${NODE_E2E_CACHE:-/var/cache/husk-node-e2e}
RESULTS=${NODE_E2E_RESULTS:-$REPO/_output/node-e2e/$RUNTIME}
# ginkgo writes its reports from the suite's work dir: make the path absolute.
RESULTS=$(realpath -m "$RESULTS")
PORT=${NODE_E2E_REGISTRY_PORT:-5055}
SUBNET=${NODE_E2E_SUBNET:-10.100.0.0/16}
PROCS=${NODE_E2E_PROCS:-8} # the specs mostly wait: 8 on 2 cores takes half the time of 4
BIN=$CACHE/bin/$K8S_VERSION
CRANE=$CACHE/bin/crane-$CRANE_VERSION/crane
ROOT=/var/lib/husk-node-e2e/$RUNTIME # the runtime's persistent dirs
STATE=/run/husk-node-e2e/$RUNTIME    # sockets, pid files, per-boot dirs
CGROUP=husk-node-e2e-$RUNTIME        # the runtime's cgroup, under each hierarchy's root
SOCK=$STATE/cri.sock
case $RUNTIME in
husk-runc) HANDLER=runc BRIDGE=ne2e-runc ;;
husk-crun) HANDLER=crun BRIDGE=ne2e-crun ;;
containerd) HANDLER=runc BRIDGE=ne2e-ctrd ;;
*) echo "node-e2e: NODE_E2E_RUNTIME must be husk-runc, husk-crun or containerd, not $RUNTIME" >&2; exit 2 ;;
esac

# The selection: [NodeConformance] plus the specs of the features husk
# supports, without the kinds upstream CI runs apart, and without what this
# machine kind cannot have (skip.txt, one regex and its reason per line).
FEATURES="UserNamespacesSupport RecursiveReadOnlyMounts SupplementalGroupsPolicy ImageVolume"
FOCUS=${NODE_E2E_FOCUS:-"\[NodeConformance\]|\[Feature:($(echo "$FEATURES" | tr ' ' '|'))\]"}
SKIP='\[Flaky\]|\[Slow\]|\[Serial\]|\[Disruptive\]|\[Alpha\]'
# A spec with any other feature stays out, also when it has one of these.
LABELS="Feature: isEmpty || Feature: isSubsetOf {$(echo "$FEATURES" | tr ' ' ',')}"

log() { echo "node-e2e: $*"; }
die() { echo "node-e2e: $*" >&2; exit 1; }

# --- preflight ------------------------------------------------------------------
preflight() {
	[ "$(id -u)" = 0 ] || die "must run as root"
	local p
	for p in 10248 10250 10255 2379 6443 "$PORT"; do
		! ss -Hltn "sport = :$p" | grep -q . || die "port $p is in use: another kubelet, API server or registry runs here"
	done
	[ ! -e "$STATE" ] || die "$STATE exists: a run is going on, or one was killed (remove it after checking)"
	! grep -q " /var/lib/kubelet" /proc/self/mountinfo || die "mounts under /var/lib/kubelet: a kubelet's pods are still there"
	if [ "$RUNTIME" = containerd ]; then
		command -v containerd >/dev/null || die "containerd missing (apt-get install containerd)"
	else
		[ -x "$REPO/bin/huskd" ] || die "no $REPO/bin/huskd (make build)"
	fi
}

# --- the registry ---------------------------------------------------------------
start_registry() {
	mkdir -p "$ROOT/registry"
	setsid "$CRANE" registry serve --address "127.0.0.1:$PORT" --disk "$ROOT/registry" \
		>"$RESULTS/registry.log" 2>&1 </dev/null &
	echo $! >"$STATE/registry.pid"
	wait_for "registry on 127.0.0.1:$PORT" 20 curl -fsS -o /dev/null "http://127.0.0.1:$PORT/v2/"
}

# wait_for WHAT SECONDS COMMAND...: poll COMMAND until it succeeds.
wait_for() {
	local what=$1 secs=$2
	shift 2
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		[ $SECONDS -lt $deadline ] || die "$what: not up after $secs s"
		sleep 0.2
	done
}

# --- the runtime ----------------------------------------------------------------
write_cni() {
	mkdir -p "$ROOT/net.d"
	cat >"$ROOT/net.d/10-node-e2e.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "node-e2e-$RUNTIME", "plugins": [
 {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
  "ipam": {"type": "host-local", "dataDir": "$ROOT/ipam", "ranges": [[{"subnet": "$SUBNET"}]],
   "routes": [{"dst": "0.0.0.0/0"}]}},
 {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
}

write_husk_config() {
	cat >"$ROOT/husk.toml" <<EOF
default_runtime = "$HANDLER"
[cni]
conf_dir = "$ROOT/net.d"
bin_dirs = ["/usr/lib/cni", "/opt/cni/bin"]
write_default = false
[runtimes.$HANDLER]
path = "$HANDLER"
root = "$STATE/runtime/$HANDLER"
# The handler upstream CI configures for the RuntimeClass specs.
[runtimes.test-handler]
path = "$HANDLER"
root = "$STATE/runtime/test-handler"
[registries."registry.k8s.io"]
endpoints = ["http://127.0.0.1:$PORT"]
skip_upstream = true
# Every other registry too (the suite pulls docker.io/library/image-N,
# invalid.registry.k8s.io/..., localhost/...): no traffic leaves this host.
[registries."*"]
endpoints = ["http://127.0.0.1:$PORT"]
skip_upstream = true
EOF
}

# containerd's hosts.toml per registry: "server" is the local registry, so
# that it never falls back to the upstream host (as registry.mirrors does).
write_containerd_hosts() {
	local h
	for h in registry.k8s.io docker.io invalid.registry.k8s.io localhost _default; do
		mkdir -p "$ROOT/certs.d/$h"
		printf 'server = "http://127.0.0.1:%s"\n[host."http://127.0.0.1:%s"]\n  capabilities = ["pull", "resolve"]\n' \
			"$PORT" "$PORT" >"$ROOT/certs.d/$h/hosts.toml"
	done
}

write_containerd_config() {
	cat >"$ROOT/containerd.toml" <<EOF
version = 2
root = "$ROOT/containerd"
state = "$STATE/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$ROOT/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:$PAUSE_VERSION"
  disable_apparmor = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$ROOT/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.test-handler]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$ROOT/certs.d"
EOF
}

# The runtime's own cgroup in every hierarchy, so that the kubelet's
# --runtime-cgroups (the Summary API's "runtime" container) is its alone.
cgroup_dirs() {
	local d
	for d in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
		[ -e "$d/cgroup.procs" ] && echo "${d%/}"
	done
}
make_cgroup() {
	local d
	for d in $(cgroup_dirs); do
		mkdir -p "$d/$CGROUP"
		# cpuset needs its cpus and mems before it takes a task.
		[ -e "$d/$CGROUP/cpuset.cpus" ] && cat "$d/cpuset.cpus" >"$d/$CGROUP/cpuset.cpus" &&
			cat "$d/cpuset.mems" >"$d/$CGROUP/cpuset.mems"
	done
}

start_runtime() {
	local cmd
	write_cni
	make_cgroup
	if [ "$RUNTIME" = containerd ]; then
		write_containerd_config
		write_containerd_hosts
		cmd=(containerd --config "$ROOT/containerd.toml")
	else
		write_husk_config
		cmd=("$REPO/bin/huskd" --config "$ROOT/husk.toml" --root "$ROOT/husk" --state "$STATE/husk" --listen "$SOCK")
	fi
	# Joins its cgroups, then becomes the runtime: the pid file is its PID.
	# shellcheck disable=SC2016,SC2046 # the script is sh's; one cgroup.procs per word
	setsid sh -c 'for d; do case $d in --) break ;; esac; echo $$ >"$d" || exit 1; shift; done; shift; exec "$@"' sh \
		$(cgroup_dirs | sed "s|\$|/$CGROUP/cgroup.procs|") -- "${cmd[@]}" >"$RESULTS/runtime.log" 2>&1 </dev/null &
	echo $! >"$STATE/runtime.pid"
	wait_for "$RUNTIME on $SOCK" 30 crictl version
	log "$RUNTIME ($HANDLER) serves $SOCK, pid $(cat "$STATE/runtime.pid"), cgroup /$CGROUP"
}

# --- the suite ------------------------------------------------------------------
# A PATH without systemd-run and systemctl (PID 1 is not systemd: the suite
# would start the kubelet as a transient unit) and with a sudo for root.
path_standins() {
	local p="$STATE/path" d f
	local -A seen=([systemd-run]=1 [systemctl]=1 [journalctl]=1 [sudo]=1)
	local links=()
	mkdir -p "$p"
	for d in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
		for f in "$d"/*; do
			[ -n "${seen[${f##*/}]:-}" ] || [ ! -x "$f" ] && continue
			seen[${f##*/}]=1
			links+=("$f")
		done
	done
	ln -s -t "$p" -- "${links[@]}"
	printf '#!/bin/sh\n# node-e2e stand-in: the suite runs as root already.\nexec "$@"\n' >"$p/sudo"
	chmod 755 "$p/sudo"
	echo "$p"
}

# The base kubelet config for this machine kind (see the README's "Node
# conformance"): cgroup v1, not systemd, shared with other work.
write_kubelet_config() {
	# Pods with dnsPolicy Default get this resolv.conf: a name server on
	# their own loopback, so that no lookup leaves the machine.
	printf 'nameserver 127.0.0.1\n' >"$STATE/resolv.conf"
	cat >"$STATE/kubelet-base.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /
podLogsDir: /var/log/pods
resolvConf: "$STATE/resolv.conf"
podCIDR: "$SUBNET"
failSwapOn: false
volumeStatsAggPeriod: 10s
fileCheckFrequency: 10s
serializeImagePulls: false
evictionPressureTransitionPeriod: 30s
evictionHard:
  memory.available: 100Mi
  nodefs.available: 2%
  nodefs.inodesFree: 2%
  imagefs.available: 2%
evictionMinimumReclaim:
  nodefs.available: 1%
  nodefs.inodesFree: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
makeIPTablesUtilChains: false
protectKernelDefaults: false
EOF
}

run_suite() {
	local path rc
	path=$(path_standins)
	write_kubelet_config
	# ginkgo runs a test binary in the binary's dir, where the suite writes
	# its kubeconfig and kubelet config: a link keeps them out of the cache.
	mkdir -p "$STATE/work"
	ln -s "$BIN/e2e_node.test" "$STATE/work/e2e_node.test"
	log "running e2e_node.test ($PROCS processes): focus '$FOCUS'"
	# cadvisor labels the containers of the runtimes it knows (containerd,
	# CRI-O) by asking them: tell it where this containerd listens.
	local cadvisor_flags=""
	[ "$RUNTIME" = containerd ] && cadvisor_flags="--containerd=$SOCK"
	local extra_skip
	extra_skip=$(sed -e '/^\s*#/d' -e '/^\s*$/d' -e 's/\s\+#\s.*$//' "$HERE/skip.txt" | paste -sd'|')
	watch_device_plugin_socket &
	local watcher=$!
	(
		cd "$STATE/work" &&
			PATH=$path "$BIN/ginkgo" --procs="$PROCS" --timeout=8h --no-color --output-dir="$RESULTS" \
				--json-report=report.json --junit-report=junit.xml \
				--focus="$FOCUS" \
				--skip="$SKIP${extra_skip:+|$extra_skip}" --label-filter="$LABELS" \
				"$STATE/work/e2e_node.test" -- \
				--container-runtime-endpoint="unix://$SOCK" --image-service-endpoint="unix://$SOCK" \
				--k8s-bin-dir="$BIN" --prepull-images=false --report-dir="$RESULTS" \
				--kubelet-config-file="$STATE/kubelet-base.yaml" \
				--kubelet-flags="--runtime-cgroups=/$CGROUP --system-cgroups= $cadvisor_flags" \
				--v=4
	) >"$RESULTS/e2e.log" 2>&1
	rc=$?
	kill "$watcher"
	log "e2e_node.test exited $rc after $((SECONDS - T_SUITE)) s (log: $RESULTS/e2e.log)"
	[ -s "$RESULTS/device-plugin-socket.txt" ] && log "WARNING: $(cat "$RESULTS/device-plugin-socket.txt")"
}

# Every kubelet serves device plugin registration at the same path,
# whatever its --root-dir: another kubelet started on this machine during
# the run (another session's make kubelet-e2e) replaces the socket and
# leaves a dead one, and the Device Plugin specs fail. Note when it does.
watch_device_plugin_socket() {
	local s=/var/lib/kubelet/device-plugins/kubelet.sock last="" cur
	while sleep 2; do
		cur=$(stat -c %i "$s" 2>/dev/null) || continue
		[ -n "$last" ] && [ "$cur" != "$last" ] &&
			echo "$(date -u +%T) $s was replaced: another kubelet took it over; Device Plugin specs after that fail" \
				>>"$RESULTS/device-plugin-socket.txt"
		last=$cur
	done
}

summarize() {
	python3 - "$RESULTS/report.json" "$RESULTS/failures.txt" <<'PY'
import json, sys
try:
    rep = json.load(open(sys.argv[1]))
except (OSError, ValueError) as e:
    print(f"node-e2e: no report ({e})"); sys.exit(0)
n = {"passed": 0, "failed": 0, "skipped": 0}
failed, selected, ordered = [], 0, 0
for suite in rep:
    selected += suite["PreRunStats"]["SpecsThatWillRun"]
    for s in suite.get("SpecReports") or []:
        name = " ".join((s.get("ContainerHierarchyTexts") or []) + [s.get("LeafNodeText", "")])
        st, msg = s.get("State"), (s.get("Failure") or {}).get("Message", "")
        if s.get("LeafNodeType") != "It":
            if st != "passed":  # a suite node: BeforeSuite, AfterSuite
                print(f"SUITE {s.get('LeafNodeType')} {st}: {msg[:300]}")
            continue
        if st == "skipped" and not msg:
            continue  # left out by focus, skip or labels
        key = "passed" if st == "passed" else "skipped" if st in ("skipped", "pending") else "failed"
        n[key] += 1
        if key == "skipped" and "earlier spec in an ordered container failed" in msg:
            ordered += 1
        if key == "failed":
            failed.append((name, " ".join(msg.split())[:400]))
with open(sys.argv[2], "w") as f:
    for name, msg in sorted(failed):
        print("FAILED:", name)
        f.write(f"{name}\n    {msg}\n")
print(f"node-e2e: {selected} specs selected; {ordered} of the skipped ones because an earlier spec of their ordered container failed")
print(f"node-e2e: {n['passed']} passed, {n['failed']} failed, {n['skipped']} skipped")
PY
}

# --- teardown and leaks ---------------------------------------------------------
# Everything the run made is found by what names it: our binaries' paths, our
# dirs, our bridge, our cgroup. Whatever had to be cleaned up here (rather
# than by the kubelet and the runtime) is listed in leaks.txt.
leak() { echo "$*" >>"$RESULTS/leaks.txt"; }

stop_pid() { # stop_pid FILE: SIGTERM the process in pid file FILE, SIGKILL after 20 s
	local pid
	[ -f "$1" ] || return 0
	pid=$(cat "$1")
	if kill -0 "$pid" 2>/dev/null; then
		kill "$pid"
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
		kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
	fi
	rm -f "$1"
}

# pids_of EXE...: processes whose executable is one of these files.
pids_of() {
	local p e want
	for p in /proc/[0-9]*; do
		e=$(readlink "$p/exe" 2>/dev/null) || continue
		for want; do [ "$e" = "$want" ] && echo "${p#/proc/}"; done
	done
}

teardown() {
	local p m
	[ -n "${TORN_DOWN:-}" ] && return
	TORN_DOWN=1
	# Only ours: make kubelet-e2e runs the same cached kubelet binary.
	for p in $(pids_of "$BIN/kubelet" "$BIN/e2e_node.test" "$BIN/ginkgo"); do
		grep -qaF -- "$STATE" "/proc/$p/cmdline" 2>/dev/null || continue
		leak "process left running: $(tr '\0' ' ' <"/proc/$p/cmdline")"
		kill -9 "$p" 2>/dev/null
	done
	if [ -S "$SOCK" ]; then
		# The kubelet is gone before it garbage-collects the last pods'
		# sandboxes: not a leak, but they go before the runtime stops.
		m=$(crictl pods -q 2>/dev/null | wc -l)
		log "removing the $m pod sandboxes the kubelet left in $RUNTIME"
		crictl rmp -fa >/dev/null 2>&1
		m=$(crictl pods -q 2>/dev/null | wc -l)
		[ "$m" -gt 0 ] && leak "$m pod sandboxes that crictl rmp -fa could not remove"
	fi
	stop_pid "$STATE/runtime.pid"
	stop_pid "$STATE/registry.pid"
	# Processes of the runtime's making that outlived it: anything left in
	# the pods' cgroups, and the runtime's helpers.
	for p in $(find /sys/fs/cgroup/*/kubepods -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u); do
		leak "process left in a pod cgroup: pid $p $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)"
		kill -9 "$p" 2>/dev/null
	done
	if [ "$RUNTIME" = containerd ]; then
		for p in $(pids_of /usr/bin/containerd-shim-runc-v2); do
			grep -qa "$STATE" "/proc/$p/cmdline" "/proc/$p/environ" 2>/dev/null || continue
			leak "containerd shim left: pid $p"; kill -9 "$p"
		done
	else
		for p in $(pids_of "$REPO/bin/husk-monitor" "$REPO/bin/husk-pause"); do
			leak "husk process left: pid $p $(tr '\0' ' ' <"/proc/$p/cmdline")"; kill -9 "$p"
		done
	fi
	# Mounts under our dirs and the kubelet's, deepest first.
	# (The kubelet bind mounts /var/lib/kubelet onto itself: that one is its.
	# huskd keeps the infras' read-only root and mount namespace for its
	# whole life and reuses them after a restart: those are its, by design.)
	awk '{print $5}' /proc/self/mountinfo | grep -E "^($ROOT|$STATE|/var/lib/kubelet)(/|$)" | sort -r |
		while read -r m; do
			case "$m" in
			/var/lib/kubelet | */infra-rootfs | */infra-ns | */infra-ns/mnt) ;;
			*) leak "mount left: $m" ;;
			esac
			umount -l "$m" 2>/dev/null
		done
	# Network: veths on our bridge, the bridge, iptables rules naming our subnet.
	m=$(ip -o link show master "$BRIDGE" 2>/dev/null | wc -l)
	[ "$m" -gt 0 ] && leak "$m veths left on $BRIDGE"
	ip link del "$BRIDGE" 2>/dev/null
	for t in filter nat mangle; do
		iptables-save -t $t 2>/dev/null | grep -F -e "$SUBNET" -e "node-e2e-$RUNTIME" | while read -r rule; do
			leak "iptables -t $t: $rule"
		done
	done
	# Cgroups: ours, and what the kubelet made (kubepods, kubelet), when empty.
	for d in $(cgroup_dirs); do
		for m in "$d/$CGROUP" "$d/kubepods" "$d/kubelet"; do
			[ -d "$m" ] && find "$m" -depth -type d -exec rmdir {} + 2>/dev/null
			[ -d "$m" ] && leak "cgroup not empty: $m"
		done
	done
	if [ -z "${NODE_E2E_KEEP:-}" ]; then
		rm -rf "$ROOT" /var/lib/kubelet
	fi
	rm -rf "$STATE"
	[ -s "$RESULTS/leaks.txt" ] && log "left behind and cleaned up: see $RESULTS/leaks.txt" && sed 's/^/  /' "$RESULTS/leaks.txt"
}

# --- main -----------------------------------------------------------------------
preflight
"$HERE/build.sh" || die "build failed"
crictl() { "$CACHE/bin/crictl-$CRICTL_VERSION/crictl" --timeout 2m -r "unix://$SOCK" -i "unix://$SOCK" "$@"; }
rm -rf "$RESULTS"
mkdir -p "$RESULTS" "$STATE" "$ROOT"
trap teardown EXIT
trap 'exit 130' INT TERM
T0=$SECONDS
start_registry
"$HERE/images.sh" "127.0.0.1:$PORT" >"$RESULTS/images.log" 2>&1 || die "images: $(tail -3 "$RESULTS/images.log")"
start_runtime
T_SUITE=$SECONDS
run_suite
teardown
summarize | tee "$RESULTS/summary.txt"
log "$RUNTIME: $((SECONDS - T0)) s in all; reports in $RESULTS"
