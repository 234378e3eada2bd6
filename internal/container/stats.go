package container

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/stats"
)

// Stats is ContainerStats: CPU and memory from the container's cgroup, the
// writable layer's usage from its upper dir. An exited container has no
// cgroup left to read; it reports its attributes only.
func (m *Manager) Stats(id string) (*runtimeapi.ContainerStats, error) {
	c, err := m.index.Get(id)
	if err != nil {
		return nil, err
	}
	return m.stats(c), nil
}

func (m *Manager) stats(c *Container) *runtimeapi.ContainerStats {
	v := c.view()
	out := &runtimeapi.ContainerStats{Attributes: &runtimeapi.ContainerAttributes{
		Id: v.ID, Metadata: c.config.GetMetadata(), Labels: c.config.GetLabels(), Annotations: c.config.GetAnnotations(),
	}}
	if v.State == StateRunning || v.State == StateCreated {
		if cg, err := stats.ReadCgroup(v.CgroupsPath); err == nil {
			out.Cpu, out.Memory = CPU(cg), Memory(cg)
		} else if !errors.Is(err, os.ErrNotExist) {
			m.logger(v).Debug("read container cgroup", "error", err)
		}
	}
	upper := filepath.Join(m.rootDir(v.ID), "upper")
	if bytes, inodes, err := usage(upper); err == nil {
		out.WritableLayer = &runtimeapi.FilesystemUsage{
			Timestamp: time.Now().UnixNano(), FsId: &runtimeapi.FilesystemIdentifier{Mountpoint: m.opts.RootDir},
			UsedBytes: &runtimeapi.UInt64Value{Value: bytes}, InodesUsed: &runtimeapi.UInt64Value{Value: inodes},
		}
	}
	return out
}

// ListStats is ListContainerStats with its filter (id, sandbox, labels).
func (m *Manager) ListStats(f *runtimeapi.ContainerStatsFilter) []*runtimeapi.ContainerStats {
	var out []*runtimeapi.ContainerStats
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
			out = append(out, m.stats(c))
		}
	}
	return out
}

// SandboxStats returns the stats of a sandbox's running containers.
func (m *Manager) SandboxStats(sandboxID string) []*runtimeapi.ContainerStats {
	var out []*runtimeapi.ContainerStats
	for _, c := range m.index.All() {
		if v := c.view(); v != nil && v.SandboxID == sandboxID && v.State == StateRunning {
			out = append(out, m.stats(c))
		}
	}
	return out
}

// SandboxPids counts the processes in a sandbox's running containers.
func (m *Manager) SandboxPids(sandboxID string) uint64 {
	var n uint64
	for _, c := range m.index.All() {
		if v := c.view(); v != nil && v.SandboxID == sandboxID && v.State == StateRunning {
			if cg, err := stats.ReadCgroup(v.CgroupsPath); err == nil {
				n += cg.Pids
			}
		}
	}
	return n
}

// CPU and Memory convert a cgroup snapshot to the CRI's messages.
func CPU(cg *stats.Cgroup) *runtimeapi.CpuUsage {
	return &runtimeapi.CpuUsage{Timestamp: cg.Timestamp.UnixNano(), UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: cg.CPUUsageNanos}}
}

func Memory(cg *stats.Cgroup) *runtimeapi.MemoryUsage {
	u := func(v uint64) *runtimeapi.UInt64Value { return &runtimeapi.UInt64Value{Value: v} }
	return &runtimeapi.MemoryUsage{
		Timestamp: cg.Timestamp.UnixNano(), WorkingSetBytes: u(cg.MemoryWorkingSetBytes), AvailableBytes: u(cg.MemoryAvailableBytes),
		UsageBytes: u(cg.MemoryUsageBytes), RssBytes: u(cg.MemoryRSSBytes), PageFaults: u(cg.PageFaults), MajorPageFaults: u(cg.MajorPageFaults),
	}
}

// usage adds up the blocks and inodes below dir.
func usage(dir string) (bytes, inodes uint64, err error) {
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // vanished while walking
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		inodes++
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			bytes += uint64(st.Blocks) * 512
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("disk usage of %s: %w", dir, err)
	}
	return bytes, inodes, nil
}
