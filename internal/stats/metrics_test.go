package stats

import (
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// checkAgainstDescriptors fails for a metric the kubelet would drop: one
// without a descriptor, or whose label values do not match its keys (the
// kubelet's CRI collector makes a Prometheus metric of each, which fails
// on a count mismatch).
func checkAgainstDescriptors(t *testing.T, ms []*runtimeapi.Metric) map[string]*runtimeapi.Metric {
	t.Helper()
	descs := map[string]*runtimeapi.MetricDescriptor{}
	for _, d := range MetricDescriptors() {
		if descs[d.Name] != nil {
			t.Errorf("descriptor %s twice", d.Name)
		}
		if !strings.HasPrefix(d.Name, "container_") || d.Help == "" {
			t.Errorf("descriptor %+v: want a cAdvisor name and help", d)
		}
		descs[d.Name] = d
	}
	byKey := map[string]*runtimeapi.Metric{}
	for _, m := range ms {
		d := descs[m.Name]
		if d == nil {
			t.Errorf("metric %s has no descriptor", m.Name)
			continue
		}
		if len(m.LabelValues) != len(d.LabelKeys) {
			t.Errorf("metric %s: %d label values %v for %d keys %v", m.Name, len(m.LabelValues), m.LabelValues, len(d.LabelKeys), d.LabelKeys)
			continue
		}
		key := m.Name
		for i, k := range d.LabelKeys[len(baseLabels):] {
			key += "," + k + "=" + m.LabelValues[len(baseLabels)+i]
		}
		byKey[key] = m
	}
	return byKey
}

func TestContainerMetrics(t *testing.T) {
	cg, err := v2Fixture().Read("/kubepods/podA/limited", Full)
	if err != nil {
		t.Fatal(err)
	}
	labels := Labels{Container: "app", ID: "c1", Image: "docker.io/library/busybox:1", Name: "app_web_ns_uid_0", Namespace: "ns", Pod: "web"}
	fsAt := time.Unix(1700000000, 0)
	ms := ContainerMetrics(ContainerSample{
		Labels: labels, Cgroup: cg, StartedAt: time.Unix(1690000000, 0),
		Spec: Spec{MemoryLimit: 64 << 20, CPUShares: 512, CPUPeriod: 100000, CPUQuota: 50000},
		FS:   FSUsage{Device: "/dev/vda", UsedBytes: 8192, At: fsAt, CapacityBytes: 1 << 40, Inodes: 1000, InodesFree: 400},
	})
	got := checkAgainstDescriptors(t, ms)
	want := map[string]uint64{
		"container_cpu_usage_seconds_total,cpu=total":                                        2, // 2.5 s, whole seconds
		"container_cpu_user_seconds_total":                                                   1,
		"container_cpu_cfs_throttled_periods_total":                                          7,
		"container_memory_usage_bytes":                                                       15728640,
		"container_memory_working_set_bytes":                                                 12582912,
		"container_memory_rss":                                                               10485760,
		"container_memory_cache":                                                             4 << 20,
		"container_memory_swap":                                                              2 << 20,
		"container_memory_max_usage_bytes":                                                   16 << 20,
		"container_memory_failures_total,failure_type=pgmajfault,scope=container":            12,
		"container_oom_events_total":                                                         1,
		"container_spec_memory_limit_bytes":                                                  64 << 20,
		"container_spec_cpu_quota":                                                           50000,
		"container_processes":                                                                3,
		"container_threads_max":                                                              1024,
		"container_fs_usage_bytes,device=/dev/vda":                                           8192,
		"container_fs_limit_bytes,device=/dev/vda":                                           1 << 40,
		"container_fs_inodes_free,device=/dev/vda":                                           400,
		"container_fs_reads_bytes_total,device=/dev/sda":                                     1459200,
		"container_fs_writes_total,device=/dev/sda":                                          353,
		"container_fs_reads_total,device=253:3":                                              1, // not in partitions: major:minor
		"container_blkio_device_usage_total,device=/dev/sda,major=8,minor=0,operation=Write": 314773504,
		"container_pressure_io_waiting_seconds_total":                                        9,
		"container_pressure_io_stalled_seconds_total":                                        7,
		"container_pressure_cpu_waiting_seconds_total":                                       0, // 0.12 s
		"container_start_time_seconds":                                                       1690000000,
	}
	for k, v := range want {
		m := got[k]
		if m == nil {
			t.Errorf("no %s", k)
			continue
		}
		if m.Value.GetValue() != v {
			t.Errorf("%s = %d, want %d", k, m.Value.GetValue(), v)
		}
	}
	for k, m := range got {
		if strings.Join(m.LabelValues[:len(baseLabels)], ",") != "app,c1,docker.io/library/busybox:1,app_web_ns_uid_0,ns,web" {
			t.Errorf("%s: labels %v", k, m.LabelValues)
		}
		// cAdvisor's counters end in _total, but for the filesystem's
		// inode count, a gauge; failcnt is a counter.
		wantType := runtimeapi.MetricType_GAUGE
		if strings.HasSuffix(m.Name, "_total") && m.Name != "container_fs_inodes_total" || m.Name == "container_memory_failcnt" {
			wantType = runtimeapi.MetricType_COUNTER
		}
		if m.MetricType != wantType {
			t.Errorf("%s: type %v, want %v", k, m.MetricType, wantType)
		}
		// Live values carry no timestamp; the writable layer's is its
		// measurement's.
		wantTS := int64(0)
		if m.Name == "container_fs_usage_bytes" {
			wantTS = fsAt.UnixNano()
		}
		if m.Timestamp != wantTS {
			t.Errorf("%s: timestamp %d, want %d", k, m.Timestamp, wantTS)
		}
	}

	// Without a cgroup (exited), only what does not come from one.
	for _, m := range ContainerMetrics(ContainerSample{Labels: labels}) {
		if !strings.HasPrefix(m.Name, "container_spec_") && !strings.HasPrefix(m.Name, "container_fs_") {
			t.Errorf("exited container: %s", m.Name)
		}
	}
}

func TestNetworkMetrics(t *testing.T) {
	ms := NetworkMetrics(Labels{Container: "POD", ID: "p1", Namespace: "ns", Pod: "web"},
		[]Interface{{Name: "eth0", RxBytes: 100, RxPackets: 2, TxBytes: 300, TxDropped: 1}, {Name: "net1", RxBytes: 7}})
	got := checkAgainstDescriptors(t, ms)
	for k, v := range map[string]uint64{
		"container_network_receive_bytes_total,interface=eth0":            100,
		"container_network_receive_packets_total,interface=eth0":          2,
		"container_network_transmit_bytes_total,interface=eth0":           300,
		"container_network_transmit_packets_dropped_total,interface=eth0": 1,
		"container_network_receive_bytes_total,interface=net1":            7,
	} {
		if m := got[k]; m == nil || m.Value.GetValue() != v || m.MetricType != runtimeapi.MetricType_COUNTER {
			t.Errorf("%s = %v, want counter %d", k, m, v)
		}
	}
	if len(ms) != 16 {
		t.Errorf("%d metrics for 2 interfaces, want 16", len(ms))
	}
}
