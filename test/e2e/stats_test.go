package e2e

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// requiredMetrics are the cAdvisor metrics issue 13 names; every container
// metric starts with cAdvisor's labels.
var requiredMetrics = []string{
	"container_cpu_usage_seconds_total", "container_memory_working_set_bytes", "container_memory_usage_bytes",
	"container_memory_rss", "container_spec_memory_limit_bytes", "container_oom_events_total",
	"container_network_receive_bytes_total", "container_network_transmit_bytes_total", "container_fs_usage_bytes",
	"container_processes",
}

var cadvisorLabels = []string{"container", "id", "image", "name", "namespace", "pod"}

// pressureExpected reports whether the kernel offers pressure for a
// container: with cgroup v2, or on a hybrid layout in the unified
// hierarchy, where runc and crun also place their containers.
func pressureExpected() bool {
	if _, err := os.Stat("/proc/pressure/cpu"); err != nil {
		return false
	}
	var st syscall.Statfs_t
	if syscall.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == 0x63677270 { // CGROUP2_SUPER_MAGIC
		return true
	}
	_, err := os.Stat("/sys/fs/cgroup/unified/cgroup.procs")
	return err == nil
}

// The stats and metrics of a pod, through CRI, with runc and crun: swap,
// IO and CPU/memory pressure where the cgroup offers them,
// usage_nano_cores, the writable layer measured in the background and
// catching up with a write within its refresh period, the cAdvisor metrics
// with labels matching their descriptors, and ImageFsInfo with the
// containers' filesystem.
func TestStatsAndMetrics(t *testing.T) {
	t.Parallel()
	e := containerEnvWith(t, withConfig("[stats]\nwritable_layer_refresh = \"1s\"\n"))
	descs := metricDescriptors(t, e)
	for _, handler := range []string{"runc", "crun"} {
		t.Run(handler, func(t *testing.T) {
			pod := e.podConfig("stats-" + handler)
			podID := e.runPod(pod, handler)
			cfg := ctrConfig("app", "sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 3600")
			cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20, CpuShares: 512, CpuPeriod: 100000, CpuQuota: 50000}
			ctr := e.run(podID, pod, cfg)

			// The writable layer: 5 MiB written show within the refresh
			// period (1 s here), measured in the background.
			if r := e.exec(ctr, 30, "dd", "if=/dev/zero", "of=/tmp/blob", "bs=1M", "count=5"); r.ExitCode != 0 {
				t.Fatalf("dd: %d %s", r.ExitCode, r.Stderr)
			}
			var cs *runtimeapi.ContainerStats
			deadline := time.Now().Add(10 * time.Second)
			for cs = containerStats(t, e, ctr); cs.GetWritableLayer().GetUsedBytes().GetValue() < 5<<20; cs = containerStats(t, e, ctr) {
				if time.Now().After(deadline) {
					t.Fatalf("writable layer %v: want >= 5 MiB within 10 s", cs.GetWritableLayer())
				}
				time.Sleep(100 * time.Millisecond)
			}
			checkContainerStats(t, handler, cs)
			// A later read has a rate: usage_nano_cores.
			if !pollUntil(10*time.Second, func() bool {
				cs = containerStats(t, e, ctr)
				return cs.GetCpu().GetUsageNanoCores() != nil
			}) {
				t.Errorf("later ContainerStats: no usage_nano_cores: %v", cs.GetCpu())
			}

			ps, err := e.rt.PodSandboxStats(e.ctx(), &runtimeapi.PodSandboxStatsRequest{PodSandboxId: podID})
			if err != nil {
				t.Fatal(err)
			}
			checkPodStats(t, handler, ps.Stats)

			checkPodMetrics(t, e, descs, podID, ctr, pod)
			checkImageFsInfo(t, e)
			e.stopRemove(podID)
		})
	}
	e.assertNoLeaks()
}

func containerStats(t *testing.T, e *env, id string) *runtimeapi.ContainerStats {
	t.Helper()
	resp, err := e.rt.ContainerStats(e.ctx(), &runtimeapi.ContainerStatsRequest{ContainerId: id})
	if err != nil {
		t.Fatalf("ContainerStats: %v", err)
	}
	return resp.Stats
}

func checkContainerStats(t *testing.T, handler string, cs *runtimeapi.ContainerStats) {
	t.Helper()
	if cs.GetCpu().GetUsageCoreNanoSeconds().GetValue() == 0 {
		t.Errorf("cpu: %v", cs.GetCpu())
	}
	m := cs.GetMemory()
	if m.GetWorkingSetBytes().GetValue() == 0 || m.GetUsageBytes().GetValue() == 0 ||
		m.GetAvailableBytes().GetValue() == 0 || m.GetAvailableBytes().GetValue()+m.GetWorkingSetBytes().GetValue() != 64<<20 {
		t.Errorf("memory with a 64 MiB limit: %v", m)
	}
	// Swap is accounted by this kernel's memory controller (memsw on v1,
	// memory.swap on v2): reported, 0 on a node without swap space.
	if cs.GetSwap() == nil || cs.GetSwap().GetSwapUsageBytes() == nil {
		t.Errorf("no swap: %v", cs.GetSwap())
	}
	if pressureExpected() {
		if cs.GetCpu().GetPsi() == nil || cs.GetMemory().GetPsi() == nil || cs.GetIo().GetPsi() == nil {
			t.Errorf("%s: pressure: cpu %v memory %v io %v", handler, cs.GetCpu().GetPsi(), cs.GetMemory().GetPsi(), cs.GetIo())
		}
		if cs.GetCpu().GetPsi().GetSome().GetTotal() == 0 {
			t.Logf("%s: no CPU pressure recorded yet: %v", handler, cs.GetCpu().GetPsi())
		}
	}
	wl := cs.GetWritableLayer()
	if wl.GetFsId().GetMountpoint() == "" || wl.GetInodesUsed().GetValue() == 0 || wl.GetTimestamp() == 0 {
		t.Errorf("writable layer: %v", wl)
	}
}

func checkPodStats(t *testing.T, handler string, ps *runtimeapi.PodSandboxStats) {
	t.Helper()
	l := ps.GetLinux()
	// The pod's own cgroup covers the infra and the container.
	if l.GetCpu().GetUsageCoreNanoSeconds().GetValue() == 0 || l.GetMemory().GetWorkingSetBytes().GetValue() == 0 ||
		l.GetProcess().GetProcessCount().GetValue() < 2 {
		t.Errorf("pod cpu %v memory %v processes %v", l.GetCpu(), l.GetMemory(), l.GetProcess())
	}
	if l.GetNetwork().GetDefaultInterface().GetName() != "eth0" || len(l.GetContainers()) != 1 {
		t.Errorf("pod network %v, %d containers", l.GetNetwork(), len(l.GetContainers()))
	}
	if pressureExpected() && (l.GetCpu().GetPsi() == nil || l.GetMemory().GetPsi() == nil || l.GetIo().GetPsi() == nil) {
		t.Errorf("%s: pod pressure: cpu %v memory %v io %v", handler, l.GetCpu().GetPsi(), l.GetMemory().GetPsi(), l.GetIo())
	}
}

// metricDescriptors checks ListMetricDescriptors and returns the label
// keys of each metric.
func metricDescriptors(t *testing.T, e *env) map[string][]string {
	t.Helper()
	resp, err := e.rt.ListMetricDescriptors(e.ctx(), &runtimeapi.ListMetricDescriptorsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string][]string{}
	for _, d := range resp.Descriptors {
		keys[d.Name] = d.LabelKeys
		if len(d.LabelKeys) < len(cadvisorLabels) || strings.Join(d.LabelKeys[:len(cadvisorLabels)], ",") != strings.Join(cadvisorLabels, ",") || d.Help == "" {
			t.Errorf("descriptor %v: want cAdvisor's labels first and a help", d)
		}
	}
	for _, name := range requiredMetrics {
		if keys[name] == nil {
			t.Errorf("no descriptor for %s", name)
		}
	}
	if k := keys["container_network_receive_bytes_total"]; len(k) == 0 || k[len(k)-1] != "interface" {
		t.Errorf("network labels %v: want interface last", k)
	}
	return keys
}

// checkPodMetrics finds the pod in ListPodSandboxMetrics and checks its
// metrics against the descriptors and what the container was given.
func checkPodMetrics(t *testing.T, e *env, descs map[string][]string, podID, ctr string, pod *runtimeapi.PodSandboxConfig) {
	t.Helper()
	resp, err := e.rt.ListPodSandboxMetrics(e.ctx(), &runtimeapi.ListPodSandboxMetricsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var pm *runtimeapi.PodSandboxMetrics
	for _, p := range resp.PodMetrics {
		if p.PodSandboxId == podID {
			pm = p
		}
	}
	if pm == nil || len(pm.ContainerMetrics) != 1 || pm.ContainerMetrics[0].ContainerId != ctr {
		t.Fatalf("pod %s not in ListPodSandboxMetrics with its container: %v", podID, pm)
	}
	got := map[string]*runtimeapi.Metric{}
	for _, m := range append(append([]*runtimeapi.Metric(nil), pm.Metrics...), pm.ContainerMetrics[0].Metrics...) {
		keys, ok := descs[m.Name]
		if !ok || len(keys) != len(m.LabelValues) {
			t.Errorf("metric %s: label values %v do not match the descriptor's keys %v", m.Name, m.LabelValues, keys)
			continue
		}
		lv := m.LabelValues
		if lv[4] != pod.Metadata.Namespace || lv[5] != pod.Metadata.Name {
			t.Errorf("metric %s: namespace and pod labels %v", m.Name, lv)
		}
		if strings.HasPrefix(m.Name, "container_network_") {
			if lv[0] != "POD" || lv[len(lv)-1] != "eth0" {
				t.Errorf("network metric %s labels %v: want container POD, interface eth0", m.Name, lv)
			}
		} else if lv[0] != "app" || lv[1] != ctr || !strings.Contains(lv[2], "busybox:e2e") {
			t.Errorf("metric %s labels %v: want container app, its ID and image", m.Name, lv)
		}
		got[m.Name] = m
	}
	for _, name := range requiredMetrics {
		if got[name] == nil {
			t.Errorf("no %s", name)
		}
	}
	val := func(name string) uint64 { return got[name].GetValue().GetValue() }
	if val("container_spec_memory_limit_bytes") != 64<<20 || val("container_processes") < 1 ||
		val("container_memory_working_set_bytes") == 0 || val("container_fs_usage_bytes") < 5<<20 {
		t.Errorf("metric values: memory limit %d, processes %d, working set %d, fs usage %d", val("container_spec_memory_limit_bytes"),
			val("container_processes"), val("container_memory_working_set_bytes"), val("container_fs_usage_bytes"))
	}
}

// checkImageFsInfo: the image store's usage is what a walk of it finds,
// and the containers' filesystem is the one holding <root>/containers.
func checkImageFsInfo(t *testing.T, e *env) {
	t.Helper()
	resp, err := runtimeapiImages(e).ImageFsInfo(e.ctx(), &runtimeapi.ImageFsInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.ImageFilesystems) != 1 || len(resp.ContainerFilesystems) != 1 {
		t.Fatalf("ImageFsInfo: %v", resp)
	}
	bytes, inodes := du(t, filepath.Join(e.root, "images"))
	img := resp.ImageFilesystems[0]
	if img.GetUsedBytes().GetValue() != bytes || img.GetInodesUsed().GetValue() != inodes {
		t.Errorf("image filesystem %v: a walk finds %d bytes, %d inodes", img, bytes, inodes)
	}
	ctr := resp.ContainerFilesystems[0]
	if want := mountPoint(t, filepath.Join(e.root, "containers")); ctr.GetFsId().GetMountpoint() != want || ctr.GetUsedBytes().GetValue() < 5<<20 {
		t.Errorf("container filesystem %v: want mount point %s and the 5 MiB written", ctr, want)
	}
}

func runtimeapiImages(e *env) runtimeapi.ImageServiceClient {
	return runtimeapi.NewImageServiceClient(e.conn)
}

// du adds up the blocks and inodes below dir, each hard-linked file once.
func du(t *testing.T, dir string) (bytes, inodes uint64) {
	t.Helper()
	seen := map[uint64]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		if st.Nlink > 1 && !d.IsDir() {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
		}
		bytes += uint64(st.Blocks) * 512
		inodes++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return bytes, inodes
}

func mountPoint(t *testing.T, path string) string {
	t.Helper()
	var st, pst syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	for p := path; p != "/"; p = filepath.Dir(p) {
		if err := syscall.Stat(filepath.Dir(p), &pst); err != nil {
			t.Fatal(err)
		}
		if pst.Dev != st.Dev {
			return p
		}
	}
	return "/"
}

// A process of a container killed by the OOM killer, while the container
// runs on, counts in container_oom_events_total.
func TestOOMEventsMetric(t *testing.T) {
	t.Parallel()
	e := containerEnv(t)
	pod := e.podConfig("oom")
	podID := e.runPod(pod, "")
	// dd's 48 MiB buffer does not fit the 24 MiB limit: the kernel kills
	// dd, sh goes on.
	cfg := ctrConfig("hog", "sh", "-c", "while true; do dd if=/dev/zero of=/dev/null bs=48M count=1; sleep 1; done")
	cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 24 << 20}
	ctr := e.run(podID, pod, cfg)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := e.rt.ListPodSandboxMetrics(e.ctx(), &runtimeapi.ListPodSandboxMetricsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var oom *runtimeapi.Metric
		for _, p := range resp.PodMetrics {
			for _, c := range p.ContainerMetrics {
				for _, m := range c.Metrics {
					if c.ContainerId == ctr && m.Name == "container_oom_events_total" {
						oom = m
					}
				}
			}
		}
		if oom.GetValue().GetValue() >= 1 {
			if oom.MetricType != runtimeapi.MetricType_COUNTER {
				t.Errorf("container_oom_events_total is a %v", oom.MetricType)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("container_oom_events_total = %v after 20 s of OOM kills\n%s", oom, e.logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if st := containerStats(t, e, ctr); st.GetMemory().GetWorkingSetBytes() == nil {
		t.Errorf("ContainerStats of the surviving container: %v", st)
	}
	e.stopRemove(podID)
	e.assertNoLeaks(podID)
}
