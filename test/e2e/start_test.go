package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// runtimeKnows tells whether the handler's runtime holds container id.
func (e *env) runtimeKnows(handler, id string) bool {
	return exec.Command(handler, "--root", filepath.Join(e.state, "runtime", handler), "state", id).Run() == nil
}

// mountedBelow lists the mounts below dir.
func mountedBelow(dir string) []string {
	var out []string
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			out = append(out, f[4])
		}
	}
	return out
}

// CreateContainer leaves the runtime alone (as containerd's does);
// StartContainer creates and starts the container in one runtime call. In
// between, resources updated (the kubelet's CPU manager) go into the
// spec the container starts with; a stop leaves it CREATED. A start that
// fails leaves it EXITED with the reason StartError, holding nothing in
// the runtime. StopContainer returns with the container's runtime state
// and mounts gone, and RemoveContainer then takes its dirs away at once.
// With runc and crun.
func TestContainerStartSemantics(t *testing.T) {
	t.Parallel()
	e := containerEnv(t)
	for _, handler := range []string{"runc", "crun"} {
		pod := e.podConfig("start-" + handler)
		podID := e.runPod(pod, handler)
		create := func(cfg *runtimeapi.ContainerConfig) string {
			t.Helper()
			resp, err := e.rt.CreateContainer(e.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
			if err != nil {
				t.Fatalf("%s: CreateContainer: %v\n%s", handler, err, e.logs())
			}
			return resp.ContainerId
		}

		id := create(ctrConfig("later", "sleep", "3600"))
		if e.runtimeKnows(handler, id) {
			t.Errorf("%s: the runtime holds a container that was only created", handler)
		}
		if _, err := e.rt.StopContainer(e.ctx(), &runtimeapi.StopContainerRequest{ContainerId: id}); err != nil {
			t.Errorf("%s: StopContainer of a created container: %v", handler, err)
		}
		if st := e.containerStatus(id); st.State != runtimeapi.ContainerState_CONTAINER_CREATED {
			t.Errorf("%s: stopped before its start: %s, want CREATED", handler, st.State)
		}
		res := &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 48 << 20, CpuShares: 256}
		if _, err := e.rt.UpdateContainerResources(e.ctx(), &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id, Linux: res}); err != nil {
			t.Fatalf("%s: UpdateContainerResources of a created container: %v", handler, err)
		}
		if _, err := e.rt.StartContainer(e.ctx(), &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
			t.Fatalf("%s: StartContainer: %v\n%s", handler, err, e.logs())
		}
		limit := containerCgroupFile(t, e, id, "memory.limit_in_bytes", "memory.max")
		if b, _ := os.ReadFile(limit); strings.TrimSpace(string(b)) != "50331648" {
			t.Errorf("%s: memory limit updated before the start: %s = %q, want 50331648", handler, limit, b)
		}
		if _, err := e.rt.StopContainer(e.ctx(), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 0}); err != nil {
			t.Fatal(err)
		}
		rootDir := filepath.Join(e.root, "containers", id)
		if st := e.containerStatus(id); st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 137 {
			t.Errorf("%s: after StopContainer: %s, exit %d", handler, st.State, st.ExitCode)
		}
		if e.runtimeKnows(handler, id) {
			t.Errorf("%s: the runtime holds a container StopContainer returned for", handler)
		}
		if m := mountedBelow(rootDir); len(m) > 0 {
			t.Errorf("%s: mounts of a container StopContainer returned for: %v", handler, m)
		}
		if _, err := e.rt.RemoveContainer(e.ctx(), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
			t.Fatal(err)
		}
		for _, d := range []string{rootDir, filepath.Join(e.state, "containers", id)} {
			if fileExists(d) {
				t.Errorf("%s: %s is there after RemoveContainer", handler, d)
			}
		}

		cfg := ctrConfig("missing", "/no/such/binary")
		cfg.Linux.SecurityContext.RunAsUser = &runtimeapi.Int64Value{Value: 0}
		bad := create(cfg)
		if _, err := e.rt.StartContainer(e.ctx(), &runtimeapi.StartContainerRequest{ContainerId: bad}); err == nil {
			t.Fatalf("%s: a missing binary started", handler)
		}
		st := e.containerStatus(bad)
		if st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 128 || st.Reason != "StartError" || !strings.Contains(strings.ToLower(st.Message), "no such file") {
			t.Errorf("%s: after a failed start: %s, exit %d, reason %q, message %q; want EXITED 128 StartError and why",
				handler, st.State, st.ExitCode, st.Reason, st.Message)
		}
		if e.runtimeKnows(handler, bad) {
			t.Errorf("%s: the runtime holds a container whose start failed", handler)
		}
		e.stopRemove(podID)
		e.assertNoLeaks(podID)
	}
}
