package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// podResources reads what verbose PodSandboxStatus shows of the pod's
// resources, under containerd's keys.
func podResources(t *testing.T, e *env, id string) (overhead, resources *runtimeapi.LinuxContainerResources) {
	t.Helper()
	resp, err := e.rt.PodSandboxStatus(e.ctx(), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Overhead  *runtimeapi.ContainerResources `json:"overhead"`
		Resources *runtimeapi.ContainerResources `json:"resources"`
	}
	if err := json.Unmarshal([]byte(resp.Info["info"]), &info); err != nil {
		t.Fatalf("verbose info: %v", err)
	}
	return info.Overhead.GetLinux(), info.Resources.GetLinux()
}

// UpdatePodSandboxResources (in-place pod resize) is validated, and the
// pod's new resources are recorded: verbose status shows them, across a
// restart of huskd.
func TestUpdatePodSandboxResources(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start()
	podID := e.runPod(e.podConfig("resize"), "")
	update := func(id string, overhead, res *runtimeapi.LinuxContainerResources) error {
		_, err := e.rt.UpdatePodSandboxResources(e.ctx(), &runtimeapi.UpdatePodSandboxResourcesRequest{PodSandboxId: id, Overhead: overhead, Resources: res})
		return err
	}
	// What the kubelet sends: the pod's CPU and memory, without overhead.
	res := &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 50000, CpuShares: 512, MemoryLimitInBytes: 256 << 20}
	overhead := &runtimeapi.LinuxContainerResources{CpuShares: 10, MemoryLimitInBytes: 1 << 20}
	if err := update(podID, overhead, res); err != nil {
		t.Fatalf("UpdatePodSandboxResources: %v\n%s", err, e.logs())
	}
	if o, r := podResources(t, e, podID); !proto.Equal(o, overhead) || !proto.Equal(r, res) {
		t.Errorf("recorded overhead %v, resources %v; want %v, %v", o, r, overhead, res)
	}
	// Resources alone keep the overhead recorded.
	res2 := &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 100000, CpuShares: 1024, MemoryLimitInBytes: 512 << 20}
	if err := update(podID, nil, res2); err != nil {
		t.Fatal(err)
	}
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	e.start()
	if o, r := podResources(t, e, podID); !proto.Equal(o, overhead) || !proto.Equal(r, res2) {
		t.Errorf("after a restart: overhead %v, resources %v; want %v, %v", o, r, overhead, res2)
	}

	bad := []struct {
		name     string
		id       string
		overhead *runtimeapi.LinuxContainerResources
		res      *runtimeapi.LinuxContainerResources
		code     codes.Code
		says     string
	}{
		{"cpu period", podID, nil, &runtimeapi.LinuxContainerResources{CpuPeriod: 10}, codes.InvalidArgument, "resources.cpu_period 10"},
		{"negative memory", podID, &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: -5}, nil, codes.InvalidArgument, "overhead.memory_limit_in_bytes -5"},
		{"nothing", podID, nil, nil, codes.InvalidArgument, "neither overhead nor resources"},
		{"unknown pod", "f00d", nil, res, codes.NotFound, "f00d"},
	}
	for _, b := range bad {
		if err := update(b.id, b.overhead, b.res); status.Code(err) != b.code || !strings.Contains(err.Error(), b.says) {
			t.Errorf("%s: %v, want %s saying %q", b.name, err, b.code, b.says)
		}
	}
	if _, err := e.rt.StopPodSandbox(e.ctx(), &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	if err := update(podID, nil, res); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("resize of a stopped pod: %v, want FailedPrecondition", err)
	}
	e.stopRemove(podID)
	e.assertNoLeaks(podID)
}

// UpdateContainerResources refuses a memory limit below what the container
// uses, naming the container, the limit and the usage, and leaves the
// cgroup as it was; a limit above the usage is applied.
func TestMemoryLimitBelowUsage(t *testing.T) {
	e := containerEnv(t)
	for _, handler := range []string{"runc", "crun"} {
		t.Run(handler, func(t *testing.T) {
			pod := e.podConfig("mem-" + handler)
			podID := e.runPod(pod, handler)
			// 40 MiB in the pod's /dev/shm: memory charged to the
			// container that the kernel cannot reclaim without swap.
			cfg := ctrConfig("fill", "sh", "-c", "head -c 41943040 /dev/zero > /dev/shm/fill && echo > /tmp/ready && exec sleep 3600")
			cfg.Linux.Resources.MemoryLimitInBytes = 256 << 20
			id := e.run(podID, pod, cfg)
			waitFile(t, e, id, "/tmp/ready")
			limitFile := containerCgroupFile(t, e, id, "memory.limit_in_bytes", "memory.max")
			before, _ := os.ReadFile(limitFile)

			_, err := e.rt.UpdateContainerResources(e.ctx(), &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id,
				Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 16 << 20}})
			msg := fmt.Sprint(err)
			usage := regexp.MustCompile(`usage of (\d+) bytes`).FindStringSubmatch(msg)
			if status.Code(err) != codes.FailedPrecondition || !strings.Contains(msg, id) || !strings.Contains(msg, "16777216") ||
				len(usage) != 2 || atoi64(usage[1]) < 40<<20 {
				t.Errorf("a 16 MiB limit under 40 MiB in use: %v; want FailedPrecondition naming the container, the limit and the usage", err)
			}
			if after, _ := os.ReadFile(limitFile); string(after) != string(before) {
				t.Errorf("the refused limit reached the cgroup: %s became %s", before, after)
			}
			st, _ := e.rt.ContainerStatus(e.ctx(), &runtimeapi.ContainerStatusRequest{ContainerId: id})
			if st.GetStatus().GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING ||
				st.GetStatus().GetResources().GetLinux().GetMemoryLimitInBytes() != 256<<20 {
				t.Errorf("after the refusal: %s with %v", st.GetStatus().GetState(), st.GetStatus().GetResources())
			}

			if _, err := e.rt.UpdateContainerResources(e.ctx(), &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id,
				Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 128 << 20}}); err != nil {
				t.Fatalf("a 128 MiB limit over 40 MiB in use: %v", err)
			}
			if after, _ := os.ReadFile(limitFile); strings.TrimSpace(string(after)) != fmt.Sprint(128<<20) {
				t.Errorf("memory limit after the update = %s", after)
			}
			_, err = e.rt.UpdateContainerResources(e.ctx(), &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id,
				Linux: &runtimeapi.LinuxContainerResources{CpuShares: 1}})
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "cpu_shares 1") {
				t.Errorf("cpu_shares 1: %v, want InvalidArgument", err)
			}
			e.stopRemove(podID)
			e.assertNoLeaks(podID, id)
		})
	}
}

// containerCgroupFile is the first of files (v1 name, v2 name) that exists
// in the container's cgroup.
func containerCgroupFile(t *testing.T, e *env, id string, files ...string) string {
	t.Helper()
	st, err := e.rt.ContainerStatus(e.ctx(), &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		CgroupsPath string `json:"cgroupsPath"`
	}
	_ = json.Unmarshal([]byte(st.Info["info"]), &info)
	for _, f := range files {
		for _, h := range []string{"/sys/fs/cgroup/memory", "/sys/fs/cgroup"} {
			if p := filepath.Join(h, info.CgroupsPath, f); fileExists(p) {
				return p
			}
		}
	}
	t.Fatalf("none of %v in the cgroup %q", files, info.CgroupsPath)
	return ""
}

func atoi64(s string) int64 { n, _ := strconv.ParseInt(s, 10, 64); return n }

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
