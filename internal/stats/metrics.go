package stats

import (
	"strconv"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The CRI metrics (ListMetricDescriptors, ListPodSandboxMetrics) carry
// cAdvisor's names, help texts and labels, so that the kubelet's
// /metrics/cadvisor keeps its dashboards when it takes them from the
// runtime (PodAndContainerStatsFromCRI), as containerd 2.2 and CRI-O serve
// them. Every container metric has cAdvisor's labels, in the order the
// kubelet's cAdvisor sets them: container (the Kubernetes name, "POD" for
// the pod's own metrics), id (the runtime's ID), image, name (the runtime's
// name of the container), namespace and pod; some add their own after
// them. The CRI carries values as integers: seconds are whole seconds, as
// in the other runtimes.

var baseLabels = []string{"container", "id", "image", "name", "namespace", "pod"}

// Labels are the values of baseLabels for one container, or for a pod.
type Labels struct {
	Container, ID, Image, Name, Namespace, Pod string
}

func (l Labels) values(extra ...string) []string {
	return append([]string{l.Container, l.ID, l.Image, l.Name, l.Namespace, l.Pod}, extra...)
}

// metricDef is one metric: its descriptor and its type.
type metricDef struct {
	name, help string
	extra      []string // labels after baseLabels
	counter    bool
}

// The metrics served, in cAdvisor's words.
var (
	cpuUsage         = metricDef{"container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", []string{"cpu"}, true}
	cpuUser          = metricDef{"container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.", nil, true}
	cpuSystem        = metricDef{"container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.", nil, true}
	cpuPeriods       = metricDef{"container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", nil, true}
	cpuThrottled     = metricDef{"container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", nil, true}
	cpuThrottledTime = metricDef{"container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled.", nil, true}
	memUsage         = metricDef{"container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed", nil, false}
	memWorkingSet    = metricDef{"container_memory_working_set_bytes", "Current working set in bytes.", nil, false}
	memRSS           = metricDef{"container_memory_rss", "Size of RSS in bytes.", nil, false}
	memCache         = metricDef{"container_memory_cache", "Number of bytes of page cache memory.", nil, false}
	memMapped        = metricDef{"container_memory_mapped_file", "Size of memory mapped files in bytes.", nil, false}
	memSwap          = metricDef{"container_memory_swap", "Container swap usage in bytes.", nil, false}
	memMaxUsage      = metricDef{"container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes", nil, false}
	memActiveFile    = metricDef{"container_memory_total_active_file_bytes", "Current total active file in bytes.", nil, false}
	memInactiveFile  = metricDef{"container_memory_total_inactive_file_bytes", "Current total inactive file in bytes.", nil, false}
	memFailcnt       = metricDef{"container_memory_failcnt", "Number of memory usage hits limits", nil, true}
	memFailures      = metricDef{"container_memory_failures_total", "Cumulative count of memory allocation failures.", []string{"failure_type", "scope"}, true}
	oomEvents        = metricDef{"container_oom_events_total", "Count of out of memory events observed for the container", nil, true}
	specMemLimit     = metricDef{"container_spec_memory_limit_bytes", "Memory limit for the container.", nil, false}
	specMemSwapLimit = metricDef{"container_spec_memory_swap_limit_bytes", "Memory swap limit for the container.", nil, false}
	specCPUShares    = metricDef{"container_spec_cpu_shares", "CPU share of the container.", nil, false}
	specCPUPeriod    = metricDef{"container_spec_cpu_period", "CPU period of the container.", nil, false}
	specCPUQuota     = metricDef{"container_spec_cpu_quota", "CPU quota of the container.", nil, false}
	processes        = metricDef{"container_processes", "Number of processes running inside the container.", nil, false}
	threadsMax       = metricDef{"container_threads_max", "Maximum number of threads allowed inside the container, infinity if value is zero", nil, false}
	fsUsage          = metricDef{"container_fs_usage_bytes", "Number of bytes that are consumed by the container on this filesystem.", []string{"device"}, false}
	fsLimit          = metricDef{"container_fs_limit_bytes", "Number of bytes that can be consumed by the container on this filesystem.", []string{"device"}, false}
	fsInodes         = metricDef{"container_fs_inodes_total", "Number of Inodes", []string{"device"}, false}
	fsInodesFree     = metricDef{"container_fs_inodes_free", "Number of available Inodes", []string{"device"}, false}
	fsReadBytes      = metricDef{"container_fs_reads_bytes_total", "Cumulative count of bytes read", []string{"device"}, true}
	fsWriteBytes     = metricDef{"container_fs_writes_bytes_total", "Cumulative count of bytes written", []string{"device"}, true}
	fsReads          = metricDef{"container_fs_reads_total", "Cumulative count of reads completed", []string{"device"}, true}
	fsWrites         = metricDef{"container_fs_writes_total", "Cumulative count of writes completed", []string{"device"}, true}
	blkioUsage       = metricDef{"container_blkio_device_usage_total", "Blkio Device bytes usage", []string{"device", "major", "minor", "operation"}, true}
	cpuStalled       = metricDef{"container_pressure_cpu_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to CPU congestion.", nil, true}
	cpuWaiting       = metricDef{"container_pressure_cpu_waiting_seconds_total", "Total time duration tasks in the container have waited due to CPU congestion.", nil, true}
	memStalled       = metricDef{"container_pressure_memory_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to memory congestion.", nil, true}
	memWaiting       = metricDef{"container_pressure_memory_waiting_seconds_total", "Total time duration tasks in the container have waited due to memory congestion.", nil, true}
	ioStalled        = metricDef{"container_pressure_io_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to IO congestion.", nil, true}
	ioWaiting        = metricDef{"container_pressure_io_waiting_seconds_total", "Total time duration tasks in the container have waited due to IO congestion.", nil, true}
	startTime        = metricDef{"container_start_time_seconds", "Start time of the container since unix epoch in seconds.", nil, false}
	lastSeen         = metricDef{"container_last_seen", "Last time a container was seen by the exporter", nil, false}
	netRxBytes       = metricDef{"container_network_receive_bytes_total", "Cumulative count of bytes received", []string{"interface"}, true}
	netRxPackets     = metricDef{"container_network_receive_packets_total", "Cumulative count of packets received", []string{"interface"}, true}
	netRxDropped     = metricDef{"container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving", []string{"interface"}, true}
	netRxErrors      = metricDef{"container_network_receive_errors_total", "Cumulative count of errors encountered while receiving", []string{"interface"}, true}
	netTxBytes       = metricDef{"container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", []string{"interface"}, true}
	netTxPackets     = metricDef{"container_network_transmit_packets_total", "Cumulative count of packets transmitted", []string{"interface"}, true}
	netTxDropped     = metricDef{"container_network_transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting", []string{"interface"}, true}
	netTxErrors      = metricDef{"container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting", []string{"interface"}, true}
	allMetrics       = []metricDef{
		cpuUsage, cpuUser, cpuSystem, cpuPeriods, cpuThrottled, cpuThrottledTime,
		memUsage, memWorkingSet, memRSS, memCache, memMapped, memSwap, memMaxUsage, memActiveFile, memInactiveFile,
		memFailcnt, memFailures, oomEvents,
		specMemLimit, specMemSwapLimit, specCPUShares, specCPUPeriod, specCPUQuota,
		processes, threadsMax,
		fsUsage, fsLimit, fsInodes, fsInodesFree, fsReadBytes, fsWriteBytes, fsReads, fsWrites, blkioUsage,
		cpuStalled, cpuWaiting, memStalled, memWaiting, ioStalled, ioWaiting,
		startTime, lastSeen,
		netRxBytes, netRxPackets, netRxDropped, netRxErrors, netTxBytes, netTxPackets, netTxDropped, netTxErrors,
	}
)

// MetricDescriptors are the descriptors of every metric
// ListPodSandboxMetrics may send.
func MetricDescriptors() []*runtimeapi.MetricDescriptor {
	out := make([]*runtimeapi.MetricDescriptor, len(allMetrics))
	for i, m := range allMetrics {
		out[i] = &runtimeapi.MetricDescriptor{Name: m.name, Help: m.help, LabelKeys: append(append([]string(nil), baseLabels...), m.extra...)}
	}
	return out
}

// metrics collects metrics of one object with its labels. Values read live
// carry timestamp 0, as the CRI asks; a cached one its time.
type metrics struct {
	labels Labels
	out    []*runtimeapi.Metric
}

func (ms *metrics) add(d metricDef, v uint64, extra ...string) { ms.addAt(d, v, time.Time{}, extra...) }

func (ms *metrics) addAt(d metricDef, v uint64, at time.Time, extra ...string) {
	typ := runtimeapi.MetricType_GAUGE
	if d.counter {
		typ = runtimeapi.MetricType_COUNTER
	}
	var ts int64
	if !at.IsZero() {
		ts = at.UnixNano()
	}
	ms.out = append(ms.out, &runtimeapi.Metric{Name: d.name, Timestamp: ts, MetricType: typ, LabelValues: ms.labels.values(extra...), Value: u64(v)})
}

func seconds(nanos uint64) uint64 { return nanos / uint64(time.Second) }

// ContainerSample is what one container's metrics are made of.
type ContainerSample struct {
	Labels Labels
	// Cgroup is a Full read; nil when the container has no cgroup (not
	// created in the runtime, or exited).
	Cgroup    *Cgroup
	StartedAt time.Time
	Spec      Spec
	// FS is the container's writable layer on its filesystem.
	FS FSUsage
}

// Spec is what the container was given: memory limits in bytes (0: none),
// CPU shares, period and quota as the CRI has them.
type Spec struct {
	MemoryLimit, MemorySwapLimit   uint64
	CPUShares, CPUPeriod, CPUQuota uint64
}

// FSUsage is a writable layer's usage, measured at At, on the filesystem
// of Device, with that filesystem's size and inodes.
type FSUsage struct {
	Device             string
	UsedBytes          uint64
	At                 time.Time
	CapacityBytes      uint64
	Inodes, InodesFree uint64
}

// ContainerMetrics are the metrics of one container.
func ContainerMetrics(s ContainerSample) []*runtimeapi.Metric {
	ms := &metrics{labels: s.Labels}
	if cg := s.Cgroup; cg != nil {
		ms.cpu(cg)
		ms.memory(cg)
		ms.add(processes, cg.Pids.Current)
		ms.add(threadsMax, cg.Pids.Limit)
		ms.io(cg.IO.Devices)
		ms.pressure(cg)
		ms.add(lastSeen, uint64(cg.Timestamp.Unix()))
	}
	ms.add(specMemLimit, s.Spec.MemoryLimit)
	ms.add(specMemSwapLimit, s.Spec.MemorySwapLimit)
	ms.add(specCPUShares, s.Spec.CPUShares)
	ms.add(specCPUPeriod, s.Spec.CPUPeriod)
	ms.add(specCPUQuota, s.Spec.CPUQuota)
	if !s.StartedAt.IsZero() {
		ms.add(startTime, uint64(s.StartedAt.Unix()))
	}
	fs := s.FS
	ms.addAt(fsUsage, fs.UsedBytes, fs.At, fs.Device)
	ms.add(fsLimit, fs.CapacityBytes, fs.Device)
	ms.add(fsInodes, fs.Inodes, fs.Device)
	ms.add(fsInodesFree, fs.InodesFree, fs.Device)
	return ms.out
}

func (ms *metrics) cpu(cg *Cgroup) {
	c := cg.CPU
	ms.add(cpuUsage, seconds(c.UsageNanos), "total")
	ms.add(cpuUser, seconds(c.UserNanos))
	ms.add(cpuSystem, seconds(c.SystemNanos))
	ms.add(cpuPeriods, c.Periods)
	ms.add(cpuThrottled, c.ThrottledPeriods)
	ms.add(cpuThrottledTime, seconds(c.ThrottledNanos))
}

func (ms *metrics) memory(cg *Cgroup) {
	m := cg.Memory
	ms.add(memUsage, m.Usage)
	ms.add(memWorkingSet, m.WorkingSet)
	ms.add(memRSS, m.RSS)
	ms.add(memCache, m.Cache)
	ms.add(memMapped, m.MappedFile)
	ms.add(memMaxUsage, m.MaxUsage)
	ms.add(memActiveFile, m.ActiveFile)
	ms.add(memInactiveFile, m.InactiveFile)
	if cg.Swap != nil {
		ms.add(memSwap, cg.Swap.Usage)
	}
	ms.add(memFailcnt, m.Failcnt)
	ms.add(memFailures, m.PageFaults, "pgfault", "container")
	ms.add(memFailures, m.MajorPageFaults, "pgmajfault", "container")
	ms.add(oomEvents, m.OOMKills)
}

func (ms *metrics) io(devices []IODevice) {
	for _, d := range devices {
		name := d.Name
		if name == "" {
			name = strconv.FormatUint(d.Major, 10) + ":" + strconv.FormatUint(d.Minor, 10)
		}
		ms.add(fsReadBytes, d.ReadBytes, name)
		ms.add(fsWriteBytes, d.WriteBytes, name)
		ms.add(fsReads, d.Reads, name)
		ms.add(fsWrites, d.Writes, name)
		major, minor := strconv.FormatUint(d.Major, 10), strconv.FormatUint(d.Minor, 10)
		ms.add(blkioUsage, d.ReadBytes, name, major, minor, "Read")
		ms.add(blkioUsage, d.WriteBytes, name, major, minor, "Write")
	}
}

// pressure: "waiting" is the time some task waited, "stalled" the time
// all did (the kernel's some and full lines), as cAdvisor names them.
func (ms *metrics) pressure(cg *Cgroup) {
	for _, p := range []struct {
		psi              *PSI
		waiting, stalled metricDef
	}{{cg.CPU.PSI, cpuWaiting, cpuStalled}, {cg.Memory.PSI, memWaiting, memStalled}, {cg.IO.PSI, ioWaiting, ioStalled}} {
		if p.psi != nil {
			ms.add(p.waiting, seconds(p.psi.Some.TotalNanos))
			ms.add(p.stalled, seconds(p.psi.Full.TotalNanos))
		}
	}
}

// NetworkMetrics are a pod's interface counters, labelled as the pod's own
// (Labels.Container "POD") with the interface.
func NetworkMetrics(l Labels, ifs []Interface) []*runtimeapi.Metric {
	ms := &metrics{labels: l}
	for _, i := range ifs {
		ms.add(netRxBytes, i.RxBytes, i.Name)
		ms.add(netRxPackets, i.RxPackets, i.Name)
		ms.add(netRxDropped, i.RxDropped, i.Name)
		ms.add(netRxErrors, i.RxErrors, i.Name)
		ms.add(netTxBytes, i.TxBytes, i.Name)
		ms.add(netTxPackets, i.TxPackets, i.Name)
		ms.add(netTxDropped, i.TxDropped, i.Name)
		ms.add(netTxErrors, i.TxErrors, i.Name)
	}
	return ms.out
}
