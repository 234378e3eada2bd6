package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// netnsInode is the inode of the network namespace pinned at path.
func netnsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatalf("stat netns %s: %v", path, err)
	}
	return st.Ino
}

// netnsHolder is a task found in a network namespace.
type netnsHolder struct {
	pid, tid int
	what     string
}

// netnsHolders lists every task on the machine (each thread: a thread can
// switch namespaces alone) inside one of the network namespaces given by
// inode, naming the task, its process and what the process is. A
// namespace that is pinned again is skipped: its inode was freed and
// reused by a namespace of someone else's pod.
func netnsHolders(inodes map[uint64]string) []netnsHolder {
	pinned := map[string]bool{}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 3 && strings.HasPrefix(f[3], "net:[") {
			pinned[f[3]] = true
		}
	}
	var out []netnsHolder
	links, _ := filepath.Glob("/proc/[0-9]*/task/[0-9]*/ns/net")
	for _, link := range links {
		ns, err := os.Readlink(link)
		if err != nil || pinned[ns] {
			continue
		}
		var ino uint64
		if _, err := fmt.Sscanf(ns, "net:[%d]", &ino); err != nil {
			continue
		}
		if id, ok := inodes[ino]; ok {
			f := strings.Split(link, "/") // "", proc, pid, task, tid, ns, net
			comm, state := procCommState(atoi(f[2]))
			cmdline, _ := os.ReadFile("/proc/" + f[2] + "/cmdline")
			out = append(out, netnsHolder{pid: atoi(f[2]), tid: atoi(f[4]), what: fmt.Sprintf("task %s of %s (%s, state %s, %q) in the netns of removed sandbox %s",
				f[4], f[2], comm, state, strings.ReplaceAll(string(cmdline), "\x00", " "), id)})
		}
	}
	return out
}

// Issue 11, item 10: the kubelet removing many pods at once must not leave
// a process in a removed pod's network namespace. Ten pods, each with a
// web server and a container with children, in a PID namespace of its
// own, the pod's or the node's; execs running in every container and a
// port-forward connection open into every pod; then ten RemovePodSandbox
// in parallel. When they have all returned, no task on the machine (a
// thread of huskd's included) may be in one of their network namespaces.
func TestParallelRemoveLeavesNoProcessInPodNetns(t *testing.T) {
	t.Parallel()
	e := containerEnv(t)
	const pods = 10
	ids := make([]string, pods)
	inodes := map[uint64]string{}
	var ctrs [][]string
	for i := range pods {
		pod := e.podConfig(fmt.Sprintf("tear%d", i))
		forker := ctrConfig("forker", "sh", "-c", "sleep 3600 & sleep 3600 & wait")
		switch i % 3 {
		case 0:
			pod.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_CONTAINER
		case 1:
			pod.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
		case 2:
			pod.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_NODE
			forker.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_NODE}
		}
		ids[i] = e.runPod(pod, "")
		_, info := e.status(ids[i])
		inodes[netnsInode(t, info.NetnsPath)] = ids[i]
		web := e.run(ids[i], pod, ctrConfig("web", "sh", "-c", "mkdir -p /www && echo hi > /www/index.html && exec httpd -f -p 8080 -h /www"))
		ctrs = append(ctrs, []string{web, e.run(ids[i], pod, forker)})
	}
	// Execs that are running when the pods go, and one port-forward
	// connection into each pod.
	var execs sync.WaitGroup
	for _, cs := range ctrs {
		for _, c := range cs {
			execs.Add(1)
			go func() {
				defer execs.Done()
				_, _ = e.rt.ExecSync(e.ctx(), &runtimeapi.ExecSyncRequest{ContainerId: c, Cmd: []string{"sleep", "600"}})
			}()
		}
	}
	for _, id := range ids {
		conn, stop := e.forwardConn(t, id, 8080)
		fmt.Fprintf(conn, "GET / HTTP/1.0\r\n\r\n")
		defer stop()
	}
	pollUntil(10*time.Second, func() bool { return countExecs(e, ctrs) >= 2*pods })

	var wg sync.WaitGroup
	errs := make(chan error, pods)
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.rt.RemovePodSandbox(e.ctx(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
				errs <- fmt.Errorf("RemovePodSandbox %s: %w", id, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var held []string
	for _, h := range netnsHolders(inodes) {
		held = append(held, h.what)
	}
	if len(held) > 0 {
		t.Errorf("right after RemovePodSandbox returned, tasks are in removed pods' network namespaces:\n  %s",
			strings.Join(held, "\n  "))
	}
	execs.Wait()
	e.assertNoLeaks(ids...)
}

// countExecs counts the exec'd sleep processes in the containers.
func countExecs(e *env, ctrs [][]string) int {
	n := 0
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if string(b) == "sleep\x00600\x00" {
			n++
		}
	}
	return n
}

// pollUntil polls cond until it holds or within has passed.
func pollUntil(within time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(within); ; time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// A container that shares the node's PID namespace keeps its other
// processes when its init exits; the runtime's delete SIGKILLs them but
// does not wait. One that takes its time to die (here it is frozen for a
// while, as one in uninterruptible I/O would be) must not outlive
// RemovePodSandbox in the pod's network namespace: the removal waits until
// the container's cgroup is empty.
func TestRemoveWaitsForContainerProcesses(t *testing.T) {
	t.Parallel()
	e := containerEnv(t)
	pod := e.podConfig("slowdeath")
	pod.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_NODE
	podID := e.runPod(pod, "")
	_, info := e.status(podID)
	netns := map[uint64]string{netnsInode(t, info.NetnsPath): podID}
	cfg := ctrConfig("forker", "sh", "-c", "sleep 3600 & exec sleep 3601")
	cfg.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_NODE}
	ctr := e.run(podID, pod, cfg)
	init := e.containerPID(ctr)
	freezer := filepath.Join("/sys/fs/cgroup/freezer", e.containerCgroup(ctr))
	var child int
	pollUntil(10*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(freezer, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid := atoi(f); pid != init {
				child = pid
			}
		}
		return child != 0
	})
	if child == 0 {
		t.Fatalf("the container's second process did not start\n%s", e.logs())
	}
	held := filepath.Join(freezer, "held")
	if err := os.Mkdir(held, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = os.WriteFile(filepath.Join(held, "freezer.state"), []byte("THAWED"), 0o644)
		_ = unix.Rmdir(held)
	})
	for _, w := range []struct{ file, value string }{{"cgroup.procs", fmt.Sprint(child)}, {"freezer.state", "FROZEN"}} {
		if err := os.WriteFile(filepath.Join(held, w.file), []byte(w.value), 0o644); err != nil {
			t.Fatalf("freeze %d: %s: %v", child, w.file, err)
		}
	}
	if !pollUntil(10*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(held, "freezer.state"))
		return strings.TrimSpace(string(b)) == "FROZEN"
	}) {
		t.Fatal("the process did not freeze")
	}
	const frozenFor = 5 * time.Second
	start := time.Now()
	go func() {
		time.Sleep(frozenFor)
		_ = os.WriteFile(filepath.Join(held, "freezer.state"), []byte("THAWED"), 0o644)
	}()
	if _, err := e.rt.RemovePodSandbox(e.ctx(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatalf("RemovePodSandbox: %v\n%s", err, e.logs())
	}
	if h := netnsHolders(netns); len(h) > 0 || alive(child) {
		t.Errorf("RemovePodSandbox returned after %s with process %d alive (%v), in the pod's network namespace: %v",
			time.Since(start).Round(time.Millisecond), child, alive(child), h)
	}
	e.assertNoLeaks(podID)
}

// containerCgroup is a container's cgroup path, from its verbose status.
func (e *env) containerCgroup(id string) string {
	e.t.Helper()
	resp, err := e.rt.ContainerStatus(e.ctx(), &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		e.t.Fatalf("ContainerStatus %s: %v", id, err)
	}
	var info struct {
		CgroupsPath string `json:"cgroupsPath"`
	}
	if err := json.Unmarshal([]byte(resp.Info["info"]), &info); err != nil || !strings.HasPrefix(info.CgroupsPath, "/") {
		e.t.Fatalf("container %s: cgroups path %q: %v", id, info.CgroupsPath, err)
	}
	return info.CgroupsPath
}
