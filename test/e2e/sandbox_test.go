package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// runtimeInfraHandler is runc with the infra run as a container of the
// runtime (infra = "runtime"), as a VM runtime's handler would have it.
const runtimeInfraHandler = `
[runtimes.runc-infra]
path = "runc"
infra = "runtime"
`

func TestSandboxLifecycle(t *testing.T) {
	for _, handler := range []string{"runc", "crun", "runc-infra"} {
		t.Run(handler, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, withConfig(runtimeInfraHandler))
			e.start()
			cfg := e.podConfig("web")
			cfg.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80, HostPort: 30000 + int32(e.subnet.IP[2])}}
			id := e.runPod(cfg, handler)

			st, info := e.status(id)
			if st.State != runtimeapi.PodSandboxState_SANDBOX_READY {
				t.Fatalf("state %s, want READY", st.State)
			}
			if ip := net.ParseIP(st.Network.Ip); ip == nil || !e.subnet.Contains(ip) {
				t.Errorf("pod IP %q not in %s", st.Network.Ip, e.subnet)
			}
			if st.RuntimeHandler != handler || st.Metadata.Name != "web" || st.Labels["app"] != "web" || st.Annotations["note"] != "e2e" {
				t.Errorf("status fields: %+v", st)
			}
			if st.CreatedAt == 0 || time.Since(time.Unix(0, st.CreatedAt)) > time.Minute {
				t.Errorf("created_at %d", st.CreatedAt)
			}
			// The infra runs, in the pod's netns, UTS and IPC namespaces.
			if !alive(info.PID) {
				t.Fatalf("infra pid %d not running", info.PID)
			}
			if comm, _ := procCommState(info.PID); comm != "husk-pause" {
				t.Errorf("infra comm %q", comm)
			}
			if nsOf(t, info.PID, "net") != nsOfPath(t, info.NetnsPath) {
				t.Error("infra is not in the pinned network namespace")
			}
			if nsOf(t, info.PID, "uts") == nsOf(t, os.Getpid(), "uts") || nsOf(t, info.PID, "ipc") == nsOf(t, os.Getpid(), "ipc") {
				t.Error("infra shares the host's UTS or IPC namespace")
			}
			if out := nsenter(t, info.PID, "hostname"); out != "web" {
				t.Errorf("hostname in pod %q", out)
			}
			addrs := nsenterNet(t, info.NetnsPath, "ip", "-o", "addr")
			if !strings.Contains(addrs, "lo ") || !strings.Contains(addrs, st.Network.Ip) {
				t.Errorf("pod addresses:\n%s", addrs)
			}
			if link := nsenterNet(t, info.NetnsPath, "ip", "-o", "link", "show", "lo"); !strings.Contains(link, "UP") {
				t.Errorf("lo not up: %s", link)
			}
			// resolv.conf from the DNS config, /dev/shm, the log directory.
			resolv, _ := os.ReadFile(filepath.Join(e.state, "sandboxes", id, "resolv.conf"))
			if string(resolv) != "search e2e.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n" {
				t.Errorf("resolv.conf %q", resolv)
			}
			if !isMount(info.ShmPath) {
				t.Errorf("shm %q not mounted", info.ShmPath)
			}
			if fi, err := os.Stat(cfg.LogDirectory); err != nil || !fi.IsDir() {
				t.Errorf("log directory: %v", err)
			}
			// The host port is mapped by the portmap plugin.
			if rules, _ := exec.Command("iptables-save", "-t", "nat").Output(); !strings.Contains(string(rules), strconv.Itoa(int(cfg.PortMappings[0].HostPort))) {
				t.Errorf("no DNAT rule for host port %d", cfg.PortMappings[0].HostPort)
			}

			// List and its filters.
			ctx := e.ctx()
			list := func(f *runtimeapi.PodSandboxFilter) int {
				resp, err := e.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: f})
				if err != nil {
					t.Fatal(err)
				}
				return len(resp.Items)
			}
			for _, tc := range []struct {
				f    *runtimeapi.PodSandboxFilter
				want int
			}{
				{nil, 1},
				{&runtimeapi.PodSandboxFilter{Id: id}, 1},
				{&runtimeapi.PodSandboxFilter{Id: id[:12]}, 1},
				{&runtimeapi.PodSandboxFilter{Id: "ffff" + id[4:]}, 0},
				{&runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}}, 1},
				{&runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY}}, 0},
				{&runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"app": "web"}}, 1},
				{&runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"app": "db"}}, 0},
			} {
				if got := list(tc.f); got != tc.want {
					t.Errorf("ListPodSandbox(%v) = %d items, want %d", tc.f, got, tc.want)
				}
			}

			// Stop: infra gone, network released; twice is fine.
			for i := 0; i < 2; i++ {
				if _, err := e.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
					t.Fatalf("StopPodSandbox #%d: %v\n%s", i+1, err, e.logs())
				}
			}
			if st, _ := e.status(id); st.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
				t.Errorf("after stop: %s", st.State)
			}
			if alive(info.PID) {
				t.Errorf("infra %d still alive after stop", info.PID)
			}
			if _, err := os.Stat(info.NetnsPath); err == nil {
				t.Errorf("netns pin %s still there after stop", info.NetnsPath)
			}
			for i := 0; i < 2; i++ {
				if _, err := e.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
					t.Fatalf("RemovePodSandbox #%d: %v", i+1, err)
				}
			}
			if _, err := e.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id}); status.Code(err) != codes.NotFound {
				t.Errorf("status after remove: %v, want NotFound", err)
			}
			e.assertNoLeaks(id)
			if cg := filepath.Join("/sys/fs/cgroup/pids", info.CgroupsPath); exists(cg) {
				t.Errorf("cgroup %s left", cg)
			}
		})
	}
}

func TestUnknownIDsStopRemoveSucceed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start()
	ctx := e.ctx()
	if _, err := e.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: "deadbeef"}); err != nil {
		t.Errorf("stop unknown: %v", err)
	}
	if _, err := e.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: "deadbeef"}); err != nil {
		t.Errorf("remove unknown: %v", err)
	}
	if _, err := e.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: "deadbeef"}); status.Code(err) != codes.NotFound {
		t.Errorf("status unknown: %v, want NotFound", err)
	}
}

func TestSharedPIDNamespace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start()
	cfg := e.podConfig("shared")
	cfg.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	id := e.runPod(cfg, "")
	_, info := e.status(id)
	st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", info.PID))
	if !strings.Contains(string(st), fmt.Sprintf("NSpid:\t%d\t1\n", info.PID)) {
		t.Errorf("infra is not PID 1 of its namespace:\n%s", st)
	}
	e.stopRemove(id)
	e.assertNoLeaks(id)
}

func TestHostNetworkPod(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start()
	cfg := e.podConfig("hostnet")
	cfg.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
	id := e.runPod(cfg, "")
	st, info := e.status(id)
	if st.State != runtimeapi.PodSandboxState_SANDBOX_READY || st.Network.Ip != "" || info.NetnsPath != "" {
		t.Errorf("host network pod: state %s ip %q netns %q", st.State, st.Network.Ip, info.NetnsPath)
	}
	if nsOf(t, info.PID, "net") != nsOf(t, os.Getpid(), "net") {
		t.Error("host network infra is not in the host netns")
	}
	e.stopRemove(id)
	e.assertNoLeaks(id)
}

func TestRetrySameConfigReturnsSameSandbox(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start()
	cfg := e.podConfig("retry")
	ids := make([]string, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			resp, err := e.rt.RunPodSandbox(e.ctx(), &runtimeapi.RunPodSandboxRequest{Config: proto.Clone(cfg).(*runtimeapi.PodSandboxConfig)})
			if err == nil {
				ids[i] = resp.PodSandboxId
			}
			errs[i] = err
		}(i)
	}
	wg.Wait()
	for i := range ids {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Fatalf("concurrent identical RunPodSandbox: ids %v errs %v", ids, errs)
		}
	}
	// After it finished, an identical retry gets the READY sandbox.
	if again := e.runPod(cfg, ""); again != ids[0] {
		t.Errorf("retry got %s, want %s", again, ids[0])
	}
	// The same name with another config names the holder.
	other := proto.Clone(cfg).(*runtimeapi.PodSandboxConfig)
	other.Hostname = "different"
	_, err := e.rt.RunPodSandbox(e.ctx(), &runtimeapi.RunPodSandboxRequest{Config: other})
	if status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), ids[0]) {
		t.Errorf("different config, same name: %v; want AlreadyExists naming %s", err, ids[0])
	}
	e.stopRemove(ids[0])
	e.assertNoLeaks(ids[0])
}

func TestInfraDeathMakesSandboxNotReady(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start()
	id := e.runPod(e.podConfig("dies"), "")
	_, info := e.status(id)
	if err := unix.Kill(info.PID, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitState(t, e, id, runtimeapi.PodSandboxState_SANDBOX_NOTREADY, time.Second)
	e.stopRemove(id)
	e.assertNoLeaks(id)
}

func waitState(t *testing.T, e *env, id string, want runtimeapi.PodSandboxState, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st, _ := e.status(id)
		if st.State == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox %s still %s after %s, want %s", id, st.State, within, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRestartRecoversSandboxes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start()
	type pod struct {
		id  string
		ip  string
		pid int
	}
	var pods []pod
	for i := 0; i < 3; i++ {
		id := e.runPod(e.podConfig(fmt.Sprintf("keep%d", i)), "")
		st, info := e.status(id)
		pods = append(pods, pod{id, st.Network.Ip, info.PID})
	}
	e.kill9()
	// One infra dies while huskd is down.
	if err := unix.Kill(pods[2].pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Leftovers of a sandbox no record knows: a netns pin.
	stray := filepath.Join(e.state, "netns", "stray0000")
	if err := os.WriteFile(stray, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("/proc/self/ns/net", stray, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	e.start()
	for i, p := range pods {
		st, info := e.status(p.id)
		want := runtimeapi.PodSandboxState_SANDBOX_READY
		if i == 2 {
			want = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
		}
		if st.State != want || st.Network.Ip != p.ip || info.PID != p.pid {
			t.Errorf("pod %d after restart: state %s ip %s pid %d; want %s %s %d", i, st.State, st.Network.Ip, info.PID, want, p.ip, p.pid)
		}
		if i < 2 && !alive(p.pid) {
			t.Errorf("infra %d was touched by the restart", p.pid)
		}
	}
	if exists(stray) {
		t.Error("stray netns pin not released at start")
	}
	if len(e.logBuf.lines("released network state", "stray0000")) == 0 {
		t.Errorf("start did not log what it released:\n%s", e.logs())
	}
	// A recovered infra's death is still noticed.
	if err := unix.Kill(pods[0].pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitState(t, e, pods[0].id, runtimeapi.PodSandboxState_SANDBOX_NOTREADY, time.Second)
	ids := []string{}
	for _, p := range pods {
		e.stopRemove(p.id)
		ids = append(ids, p.id)
	}
	e.assertNoLeaks(ids...)
}

func nsOf(t *testing.T, pid int, ns string) string {
	t.Helper()
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
	if err != nil {
		t.Fatalf("ns of %d: %v", pid, err)
	}
	return l
}

func nsOfPath(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return fmt.Sprintf("net:[%d]", st.Ino)
}

func nsenter(t *testing.T, pid int, args ...string) string {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(pid), "-u", "-n", "--"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter %v: %v: %s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func nsenterNet(t *testing.T, netns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=" + netns, "--"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter %v: %v: %s", args, err, out)
	}
	return string(out)
}

func isMount(path string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

var _ = context.Background

// A sandbox whose record is lost (a store restored from a backup taken
// before the pod existed) has its network attachment, netns, infra (by its
// cgroup) and monitor released at start.
func TestStartReleasesUnknownSandboxes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start()
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(e.root, "husk.db")
	backup, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	e.start()
	id := e.runPod(e.podConfig("lost"), "")
	_, info := e.status(id)
	e.kill9()
	if err := os.WriteFile(db, backup, 0o600); err != nil {
		t.Fatal(err)
	}
	e.start()
	if resp, _ := e.rt.ListPodSandbox(e.ctx(), &runtimeapi.ListPodSandboxRequest{}); len(resp.GetItems()) != 0 {
		t.Errorf("listed %v", resp.GetItems())
	}
	if len(e.logBuf.lines("released network state", id)) == 0 || len(e.logBuf.lines("released the infra of no known sandbox", id)) == 0 {
		t.Errorf("start did not say what it released:\n%s", e.logs())
	}
	deadline := time.Now().Add(2 * time.Second)
	for alive(info.PID) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if alive(info.PID) {
		t.Errorf("infra %d of the unknown sandbox still runs", info.PID)
	}
	// Its sandbox dir is stray too.
	e.assertNoLeaks(id)
}
