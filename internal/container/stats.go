package container

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/stats"
)

// Stats is ContainerStats: CPU, memory, swap and IO pressure from the
// container's cgroup, the writable layer's usage from the last measurement
// (writableLayers). An exited container has no cgroup left to read; it
// reports its attributes and its writable layer.
func (m *Manager) Stats(id string) (*runtimeapi.ContainerStats, error) {
	c, err := m.index.Get(id)
	if err != nil {
		return nil, err
	}
	st, _ := m.stats(c)
	return st, nil
}

// stats returns the container's CRI stats and the cgroup snapshot they
// came from (nil when the container has no cgroup to read).
func (m *Manager) stats(c *Container) (*runtimeapi.ContainerStats, *stats.Cgroup) {
	v := c.view()
	out := &runtimeapi.ContainerStats{Attributes: &runtimeapi.ContainerAttributes{
		Id: v.ID, Metadata: c.config.GetMetadata(), Labels: c.config.GetLabels(), Annotations: c.config.GetAnnotations(),
	}}
	cg := m.readCgroup(v, stats.Basic)
	if cg != nil {
		out.Cpu, out.Memory, out.Swap, out.Io = cg.CRICPU(), cg.CRIMemory(), cg.CRISwap(), cg.CRIIO()
		if nc, ok := m.cpuRates.NanoCores(v.ID, cg.CPU.UsageNanos, cg.Timestamp); ok {
			out.Cpu.UsageNanoCores = &runtimeapi.UInt64Value{Value: nc}
		}
	}
	if u, err := m.layers.get(v.ID, m.upperDir(v.ID)); err == nil {
		out.WritableLayer = &runtimeapi.FilesystemUsage{
			Timestamp: u.at.UnixNano(), FsId: &runtimeapi.FilesystemIdentifier{Mountpoint: m.containersMount},
			UsedBytes: &runtimeapi.UInt64Value{Value: u.bytes}, InodesUsed: &runtimeapi.UInt64Value{Value: u.inodes},
		}
	}
	return out, cg
}

// readCgroup reads the cgroup of a container that has one (created or
// running); nil otherwise, or when it is gone meanwhile.
func (m *Manager) readCgroup(v *Record, detail stats.Detail) *stats.Cgroup {
	if v.State != StateRunning && v.State != StateCreated {
		return nil
	}
	cg, err := m.cgroups.Read(v.CgroupsPath, detail)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			m.logger(v).Debug("read container cgroup", "error", err)
		}
		return nil
	}
	return cg
}

func (m *Manager) upperDir(id string) string { return filepath.Join(m.rootDir(id), "upper") }

// ListStats is ListContainerStats with its filter (id, sandbox, labels).
// The containers are read a few at a time (statsParallel).
func (m *Manager) ListStats(f *runtimeapi.ContainerStatsFilter) []*runtimeapi.ContainerStats {
	var list []*Container
	for _, c := range m.index.All() {
		v := c.view()
		if v == nil || v.State == StateCreating ||
			(f.GetId() != "" && !strings.HasPrefix(v.ID, f.GetId())) ||
			(f.GetPodSandboxId() != "" && !strings.HasPrefix(v.SandboxID, f.GetPodSandboxId())) {
			continue
		}
		match := true
		for k, want := range f.GetLabelSelector() {
			if c.config.GetLabels()[k] != want {
				match = false
			}
		}
		if match {
			list = append(list, c)
		}
	}
	out := make([]*runtimeapi.ContainerStats, len(list))
	stats.Parallel(len(list), func(i int) { out[i], _ = m.stats(list[i]) })
	return out
}

// SandboxStats returns the stats of a sandbox's running containers, and
// the sum of their cgroups' CPU, memory and process figures, for a pod
// whose cgroup cannot be read as a whole.
func (m *Manager) SandboxStats(sandboxID string) ([]*runtimeapi.ContainerStats, stats.Cgroup) {
	var out []*runtimeapi.ContainerStats
	var sum stats.Cgroup
	for _, c := range m.index.All() {
		if v := c.view(); v != nil && v.SandboxID == sandboxID && v.State == StateRunning {
			st, cg := m.stats(c)
			out = append(out, st)
			if cg != nil {
				sum.CPU.UsageNanos += cg.CPU.UsageNanos
				addMemory(&sum.Memory, cg.Memory)
				sum.Pids.Current += cg.Pids.Current
			}
		}
	}
	return out, sum
}

func addMemory(sum *stats.Memory, m stats.Memory) {
	sum.Usage += m.Usage
	sum.WorkingSet += m.WorkingSet
	sum.RSS += m.RSS
	sum.PageFaults += m.PageFaults
	sum.MajorPageFaults += m.MajorPageFaults
}

// FsUsage is the usage of the containers' writable layers, for
// ImageFsInfo's container filesystem: the sum of the last measurements,
// timed by the oldest, and the mount point of the filesystem holding them.
func (m *Manager) FsUsage() (bytes, inodes uint64, at time.Time, mountpoint string) {
	t := m.layers.total()
	return t.bytes, t.inodes, t.at, m.containersMount
}

// MetricSamples are what the CRI metrics of a sandbox's containers are made
// of: a Full read of each one's cgroup, its spec and its writable layer.
// namespace and pod are the pod's, for the labels.
func (m *Manager) MetricSamples(sandboxID, namespace, pod string) []stats.ContainerSample {
	var list []*Container
	for _, c := range m.index.All() {
		if v := c.view(); v.SandboxID == sandboxID && v.State != StateCreating {
			list = append(list, c)
		}
	}
	if len(list) == 0 {
		return nil
	}
	fs := stats.FSUsage{Device: m.containersDevice}
	fs.CapacityBytes, fs.Inodes, fs.InodesFree, _ = stats.Filesystem(filepath.Join(m.opts.RootDir, "containers"))
	out := make([]stats.ContainerSample, len(list))
	for i, c := range list {
		out[i] = m.metricSample(c, namespace, pod, fs)
	}
	return out
}

func (m *Manager) metricSample(c *Container, namespace, pod string, fs stats.FSUsage) stats.ContainerSample {
	v := c.view()
	s := stats.ContainerSample{
		Labels: stats.Labels{Container: c.config.GetMetadata().GetName(), ID: v.ID, Image: v.ImageName, Name: v.Name,
			Namespace: namespace, Pod: pod},
		Cgroup: m.readCgroup(v, stats.Full),
		FS:     fs,
	}
	if v.StartedAt != 0 {
		s.StartedAt = time.Unix(0, v.StartedAt)
	}
	if r := decodeResources(v.Resources); r != nil {
		nonNeg := func(v int64) uint64 { return uint64(max(v, 0)) }
		s.Spec = stats.Spec{MemoryLimit: nonNeg(r.MemoryLimitInBytes), MemorySwapLimit: nonNeg(r.MemorySwapLimitInBytes),
			CPUShares: nonNeg(r.CpuShares), CPUPeriod: nonNeg(r.CpuPeriod), CPUQuota: nonNeg(r.CpuQuota)}
	}
	if u, err := m.layers.get(v.ID, m.upperDir(v.ID)); err == nil {
		s.FS.UsedBytes, s.FS.At = u.bytes, u.at
	}
	return s
}
