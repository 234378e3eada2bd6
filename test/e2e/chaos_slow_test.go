//go:build chaos

// The slow chaos tests: `make chaos` runs them (with the fast ones, whose
// names start with TestChaos too). README.md says how long each takes.

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// listedPods returns the sandboxes huskd lists.
func (e *env) listedPods() []*runtimeapi.PodSandbox {
	e.t.Helper()
	resp, err := e.rt.ListPodSandbox(e.ctx(), &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		e.t.Fatalf("ListPodSandbox: %v (huskd alive: %v)\n%s", err, alive(e.huskdPID()), e.logs())
	}
	return resp.Items
}

// strayProcesses lists the processes in this env's cgroups that belong to
// none of the listed pods and containers (cgroups are <parent>/pod<uid>/<id>).
func (e *env) strayProcesses(pods []*runtimeapi.PodSandbox, containers []*runtimeapi.Container) []string {
	known := map[string]bool{}
	for _, p := range pods {
		known["pod"+p.Metadata.Uid+"/"+p.Id] = true
		for _, c := range containers {
			if c.PodSandboxId == p.Id {
				known["pod"+p.Metadata.Uid+"/"+c.Id] = true
			}
		}
	}
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cgroup")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		i := bytes.Index(b, []byte(e.cgroupParent+"/"))
		if i < 0 {
			continue
		}
		rest := string(b[i+len(e.cgroupParent)+1:])
		rest = strings.SplitN(rest, "\n", 2)[0]
		pid := atoi(strings.Split(p, "/")[2])
		if comm, st := procCommState(pid); st != "" && st != "Z" && !known[rest] {
			out = append(out, fmt.Sprintf("process %d (%s) in %s", pid, comm, rest))
		}
	}
	return out
}

// strayPins lists the netns pins of no listed pod.
func (e *env) strayPins(pods []*runtimeapi.PodSandbox) []string {
	known := map[string]bool{}
	for _, p := range pods {
		known[p.Id] = true
	}
	var out []string
	ents, _ := os.ReadDir(filepath.Join(e.state, "netns"))
	for _, en := range ents {
		if !known[en.Name()] {
			out = append(out, "netns pin "+en.Name())
		}
	}
	return out
}

// removeAll removes every pod huskd lists.
func (e *env) removeAll() []string {
	e.t.Helper()
	var ids []string
	for _, p := range e.listedPods() {
		ids = append(ids, p.Id)
		e.stopRemove(p.Id)
	}
	return ids
}

// killWhen kills huskd -9 once done has reached n (n 0: a moment after
// the calls started), and says when that was.
func (e *env) killWhen(done *atomic.Int32, n int32) string {
	e.t.Helper()
	start := time.Now()
	if n == 0 {
		time.Sleep(100 * time.Millisecond)
	} else if !pollUntil(2*time.Minute, func() bool { return done.Load() >= n }) {
		e.t.Fatalf("only %d calls done in 2 minutes\n%s", done.Load(), e.logs())
	}
	e.kill9()
	return fmt.Sprintf("%d done, %s in", done.Load(), time.Since(start).Round(time.Millisecond))
}

// Chaos: kill -9 of huskd while 20 RunPodSandbox run, at four points of
// their progress (when 0, 5, 10 and 15 have returned). After the restart
// every pod is either there and READY with its infra running, or gone with
// nothing of it left (no process, no netns pin); removing all leaves
// nothing.
func TestChaosKill9DuringRunPodSandbox(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start()
	const pods = 20
	for round, after := range []int32{0, 5, 10, 15} {
		var wg sync.WaitGroup
		var done atomic.Int32
		for i := range pods {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cfg := e.podConfig(fmt.Sprintf("r%dp%d", round, i))
				if _, err := e.rt.RunPodSandbox(e.ctx(), &runtimeapi.RunPodSandboxRequest{Config: cfg}); err == nil {
					done.Add(1)
				}
			}()
		}
		when := e.killWhen(&done, after)
		wg.Wait()
		e.restart()
		listed := e.listedPods()
		for _, p := range listed {
			st, info := e.status(p.Id)
			if st.State != runtimeapi.PodSandboxState_SANDBOX_READY || !alive(info.PID) || !exists(info.NetnsPath) || st.Network.Ip == "" {
				t.Errorf("round %d (killed with %s): pod %s is half there: %s, infra %d alive %v, netns %v, IP %q",
					round, when, p.Metadata.Name, st.State, info.PID, alive(info.PID), exists(info.NetnsPath), st.Network.Ip)
			}
		}
		for _, l := range append(e.strayProcesses(listed, nil), e.strayPins(listed)...) {
			t.Errorf("round %d (killed with %s): left of a pod that is gone: %s", round, when, l)
		}
		t.Logf("round %d: huskd killed with %s 20 RunPodSandbox: %d pods there, %d gone", round, when, len(listed), pods-len(listed))
		ids := e.removeAll()
		e.assertNoLeaks(ids...)
	}
}

// Chaos: kill -9 of huskd while 20 CreateContainer+StartContainer run in
// 4 pods, at four points (when 0, 5, 10 and 15 have started). After the
// restart every container is either
// there (RUNNING, or CREATED and startable) with its process, or gone
// with nothing of it left; removing all leaves nothing.
func TestChaosKill9DuringCreateStart(t *testing.T) {
	t.Parallel()
	e := containerEnv(t)
	const pods, ctrs = 4, 20
	for round, after := range []int32{0, 5, 10, 15} {
		cfgs := make([]*runtimeapi.PodSandboxConfig, pods)
		podIDs := make([]string, pods)
		for i := range pods {
			cfgs[i] = e.podConfig(fmt.Sprintf("r%dp%d", round, i))
			podIDs[i] = e.runPod(cfgs[i], "")
		}
		var wg sync.WaitGroup
		var done atomic.Int32
		for i := range ctrs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := i % pods
				resp, err := e.rt.CreateContainer(e.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: podIDs[p],
					Config: ctrConfig(fmt.Sprintf("c%d", i), "sleep", "3600"), SandboxConfig: cfgs[p]})
				if err == nil {
					if _, err := e.rt.StartContainer(e.ctx(), &runtimeapi.StartContainerRequest{ContainerId: resp.ContainerId}); err == nil {
						done.Add(1)
					}
				}
			}()
		}
		when := e.killWhen(&done, after)
		wg.Wait()
		e.restart()
		resp, err := e.rt.ListContainers(e.ctx(), &runtimeapi.ListContainersRequest{})
		if err != nil {
			t.Fatalf("ListContainers after the restart: %v\n%s", err, e.logs())
		}
		counts := map[runtimeapi.ContainerState]int{}
		for _, c := range resp.Containers {
			counts[c.State]++
			switch c.State {
			case runtimeapi.ContainerState_CONTAINER_CREATED:
				if _, err := e.rt.StartContainer(e.ctx(), &runtimeapi.StartContainerRequest{ContainerId: c.Id}); err != nil {
					t.Errorf("round %d: container %s CREATED after the restart does not start: %v", round, c.Metadata.Name, err)
					continue
				}
				fallthrough
			case runtimeapi.ContainerState_CONTAINER_RUNNING:
				if r, err := e.rt.ExecSync(e.ctx(), &runtimeapi.ExecSyncRequest{ContainerId: c.Id, Cmd: []string{"echo", "ok"}, Timeout: 10}); err != nil || string(r.Stdout) != "ok\n" {
					t.Errorf("round %d: container %s (%s after the restart) does not run: %v", round, c.Metadata.Name, c.State, err)
				}
			default:
				st := e.containerStatus(c.Id)
				t.Errorf("round %d: container %s is %s after the restart (exit %d %q %q); nothing stopped it",
					round, c.Metadata.Name, c.State, st.ExitCode, st.Reason, st.Message)
			}
		}
		for _, l := range e.strayProcesses(e.listedPods(), resp.Containers) {
			t.Errorf("round %d (killed with %s): left of a container that is gone: %s", round, when, l)
		}
		t.Logf("round %d: huskd killed with %s 20 CreateContainer+StartContainer: %d running, %d created, %d gone",
			round, when, counts[runtimeapi.ContainerState_CONTAINER_RUNNING], counts[runtimeapi.ContainerState_CONTAINER_CREATED],
			ctrs-len(resp.Containers))
		for _, c := range resp.Containers {
			if _, err := e.rt.RemoveContainer(e.ctx(), &runtimeapi.RemoveContainerRequest{ContainerId: c.Id}); err != nil {
				t.Errorf("RemoveContainer %s: %v", c.Metadata.Name, err)
			}
		}
		ids := e.removeAll()
		e.assertNoLeaks(ids...)
	}
}

// Chaos: a simulated reboot of a node with pods of every kind (a PID
// namespace of the pod's, of each container's, the node's; host network;
// crun), containers running and execs in them. After it every container
// is EXITED, 255 "Unknown" with a message, every pod NOTREADY; all of them
// can be removed, leaving nothing, and the same pods run again.
func TestChaosReboot(t *testing.T) {
	t.Parallel()
	e := containerEnv(t)
	type podKind struct {
		name    string
		handler string
		edit    func(*runtimeapi.PodSandboxConfig)
	}
	kinds := []podKind{
		{"podpid", "", func(*runtimeapi.PodSandboxConfig) {}},
		{"ctrpid", "", func(p *runtimeapi.PodSandboxConfig) {
			p.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_CONTAINER
		}},
		{"nodepid", "", func(p *runtimeapi.PodSandboxConfig) {
			p.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_NODE
		}},
		{"hostnet", "", func(p *runtimeapi.PodSandboxConfig) {
			p.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
		}},
		{"crun", "crun", func(*runtimeapi.PodSandboxConfig) {}},
	}
	run := func() (pods, containers []string) {
		for _, k := range kinds {
			cfg := e.podConfig("reboot-" + k.name)
			k.edit(cfg)
			id := e.runPod(cfg, k.handler)
			pods = append(pods, id)
			for _, c := range []*runtimeapi.ContainerConfig{
				ctrConfig("sleeper", "sleep", "3600"),
				ctrConfig("forker", "sh", "-c", "sleep 3600 & while true; do echo tick; sleep 1; done"),
			} {
				containers = append(containers, e.run(id, cfg, c))
			}
		}
		return pods, containers
	}
	pods, containers := run()
	for _, c := range containers {
		go func() {
			_, _ = e.rt.ExecSync(e.ctx(), &runtimeapi.ExecSyncRequest{ContainerId: c, Cmd: []string{"sleep", "600"}})
		}()
	}
	pollUntil(10*time.Second, func() bool { return countExecs(e, nil) >= len(containers) })
	start := time.Now()
	e.simulateReboot(pods...)
	e.restart()
	t.Logf("reboot simulated and huskd up again in %s", time.Since(start).Round(time.Millisecond))
	for _, c := range containers {
		st := e.waitExited(c, 10*time.Second)
		if st.ExitCode != 255 || st.Reason != "Unknown" || st.Message == "" {
			t.Errorf("container %s: exit %d reason %q message %q; want 255 Unknown and why", st.Metadata.Name, st.ExitCode, st.Reason, st.Message)
		}
	}
	for _, id := range pods {
		if st, _ := e.status(id); st.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
			t.Errorf("pod %s: %s", st.Metadata.Name, st.State)
		}
	}
	removed := e.removeAll()
	e.assertNoLeaks(removed...)
	pods, _ = run()
	for _, id := range pods {
		if st, _ := e.status(id); st.State != runtimeapi.PodSandboxState_SANDBOX_READY {
			t.Errorf("pod %s run again: %s", st.Metadata.Name, st.State)
		}
	}
	e.assertNoLeaks(append(removed, e.removeAll()...)...)
}
