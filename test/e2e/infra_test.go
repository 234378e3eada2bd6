package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// procStatus reads /proc/<pid>/status as keys and values.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("status of %d: %v", pid, err)
	}
	out := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// ppidOf is the parent of pid.
func ppidOf(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0
	}
	return atoi(f[1])
}

// oomFloor is the lowest oom_score_adj huskd can give: -998 unless it
// lacks CAP_SYS_RESOURCE, then its own (huskd clamps, as runc would fail).
func oomFloor(t *testing.T, huskd int) int {
	st := procStatus(t, huskd)
	eff, _ := strconv.ParseUint(st["CapEff"], 16, 64)
	if eff&(1<<unix.CAP_SYS_RESOURCE) != 0 {
		return -998
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", huskd))
	own := atoi(strings.TrimSpace(string(b)))
	return max(own, -998)
}

// The infra's isolation, read from /proc, for each way it starts (runc and
// crun start it directly, runc-infra through runc) and each kind of pod:
// no capabilities at all (bounding set included), no_new_privs, a seccomp
// filter, its own cgroup under the pod's parent, the infra oom_score_adj,
// a read-only root with nothing of the node's in it, PID 1 of the pod's
// PID namespace (the node's for hostPID), the pod's user namespace, and
// the pod's monitor as its parent.
func TestInfraIsolation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(runtimeInfraHandler))
	e.start()
	mapping := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 400000, Length: 65536}}
	pods := map[string]func(*runtimeapi.PodSandboxConfig){
		"pod": func(*runtimeapi.PodSandboxConfig) {},
		"host-network-pid-ipc": func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{
				Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_NODE}
		},
		"userns": func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext.NamespaceOptions.UsernsOptions = &runtimeapi.UserNamespace{
				Mode: runtimeapi.NamespaceMode_POD, Uids: mapping, Gids: mapping}
		},
	}
	floor := oomFloor(t, e.daemon.Process.Pid)
	var ids []string
	for _, handler := range []string{"runc", "crun", "runc-infra"} {
		for kind, adjust := range pods {
			t.Run(handler+"/"+kind, func(t *testing.T) {
				cfg := e.podConfig("iso-" + kind)
				adjust(cfg)
				id := e.runPod(cfg, handler)
				ids = append(ids, id)
				_, info := e.status(id)
				pid := info.PID
				st := procStatus(t, pid)
				for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
					if st[k] != "0000000000000000" {
						t.Errorf("%s = %s, want no capability", k, st[k])
					}
				}
				if st["NoNewPrivs"] != "1" || st["Seccomp"] != "2" {
					t.Errorf("NoNewPrivs %s, Seccomp %s; want 1, 2 (a filter)", st["NoNewPrivs"], st["Seccomp"])
				}
				nspid := strings.Fields(st["NSpid"])
				if hostPID := kind == "host-network-pid-ipc"; hostPID && len(nspid) != 1 || !hostPID && (len(nspid) != 2 || nspid[1] != "1") {
					t.Errorf("NSpid %q", st["NSpid"])
				}
				// Its own cgroup, under the pod's parent, in every hierarchy.
				want := cfg.Linux.CgroupParent + "/" + id
				if info.CgroupsPath != want {
					t.Errorf("cgroups path %q, want %q", info.CgroupsPath, want)
				}
				cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
				for _, l := range strings.Split(strings.TrimSpace(string(cg)), "\n") {
					if f := strings.SplitN(l, ":", 3); len(f) != 3 || f[2] != want {
						t.Errorf("cgroup %q, want %s in every hierarchy", l, want)
					}
				}
				if b, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/cpu", want, "cpu.shares")); strings.TrimSpace(string(b)) != "2" {
					t.Errorf("cpu.shares %q, want 2", b)
				}
				if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid)); atoi(strings.TrimSpace(string(b))) != floor {
					t.Errorf("oom_score_adj %q, want %d", b, floor)
				}
				// A read-only root holding husk-pause, and no way out of it.
				root := rootMount(t, pid)
				if !strings.HasPrefix(root, "ro,") && !strings.HasPrefix(root, "ro ") && root != "ro" {
					t.Errorf("root mount options %q, want read-only", root)
				}
				if _, err := os.Stat(fmt.Sprintf("/proc/%d/root/husk-pause", pid)); err != nil {
					t.Errorf("husk-pause not in the infra's root: %v", err)
				}
				if _, err := os.Stat(fmt.Sprintf("/proc/%d/root/../../../etc/passwd", pid)); err == nil {
					t.Error("the node's files are reachable through the infra's root")
				}
				userns := nsOf(t, pid, "user") != nsOf(t, os.Getpid(), "user")
				if kind == "userns" {
					m, _ := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", pid))
					if !userns || strings.Join(strings.Fields(string(m)), " ") != "0 400000 65536" {
						t.Errorf("user namespace: own %v, uid_map %q; want the pod's", userns, m)
					}
				} else if userns {
					t.Error("the infra has a user namespace the pod did not ask for")
				}
				if mon := e.podMonitor(id); ppidOf(pid) != mon {
					t.Errorf("infra's parent %d, want the pod's monitor %d", ppidOf(pid), mon)
				}
			})
		}
	}
	for _, id := range ids {
		e.stopRemove(id)
	}
	e.assertNoLeaks(ids...)
}

// rootMount is the options of the mount at the root of pid's mount
// namespace, as pid sees it.
func rootMount(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 5 && f[4] == "/" {
			return f[5]
		}
	}
	t.Fatalf("no root mount in:\n%s", b)
	return ""
}

// Issue 11, item 9: the infra's parent is its pod's monitor, which
// outlives huskd. After a kill -9 of huskd and a restart, the infra of a
// pod (its own network, or the node's) is still the monitor's child, an
// infra killed then is reaped at once (no zombie for the node's PID 1 to
// collect) and its sandbox becomes NOTREADY.
func TestInfraParentOutlivesHuskd(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start()
	hostNet := e.podConfig("hostnet-keep")
	hostNet.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}
	var ids []string
	for _, cfg := range []*runtimeapi.PodSandboxConfig{e.podConfig("keep"), hostNet} {
		ids = append(ids, e.runPod(cfg, ""))
	}
	e.kill9()
	e.start()
	for _, id := range ids {
		_, info := e.status(id)
		mon := e.podMonitor(id)
		if ppidOf(info.PID) != mon {
			t.Fatalf("after a restart, infra %d's parent is %d, want its monitor %d", info.PID, ppidOf(info.PID), mon)
		}
		if err := unix.Kill(info.PID, unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, state := procCommState(info.PID); state == "" {
				break // reaped
			}
			if time.Now().After(deadline) {
				_, state := procCommState(info.PID)
				t.Fatalf("killed infra %d not reaped after 5s (state %s)", info.PID, state)
			}
			time.Sleep(10 * time.Millisecond)
		}
		waitState(t, e, id, runtimeapi.PodSandboxState_SANDBOX_NOTREADY, 2*time.Second)
	}
	for _, id := range ids {
		e.stopRemove(id)
	}
	e.assertNoLeaks(ids...)
}
