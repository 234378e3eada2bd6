package stats

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/cgroups/v3/cgroup1"
	v1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
)

// v1Unlimited is the value above which a v1 memory limit counts as unset.
// The kernel reports "no limit" as a page-rounded MaxInt64, so the kubelet
// uses the same threshold rather than an exact value.
const v1Unlimited = uint64(1) << 62

// readV1 reads the Full figures of group from the v1 hierarchies, and its
// pressure from the unified hierarchy of a hybrid layout.
func (r *Reader) readV1(group string) (*Cgroup, error) {
	cg, err := cgroup1.Load(cgroup1.StaticPath(group), cgroup1.WithHierarchy(r.v1Hierarchy()))
	if err != nil {
		if errors.Is(err, cgroup1.ErrCgroupDeleted) {
			return nil, fmt.Errorf("load %s: %w", group, os.ErrNotExist)
		}
		return nil, fmt.Errorf("load %s: %w", group, err)
	}
	now := time.Now()
	// IgnoreNotExist keeps a controller in which the group is missing from
	// failing the others.
	m, err := cg.Stat(cgroup1.IgnoreNotExist)
	if err != nil {
		return nil, fmt.Errorf("stat: %w", err)
	}
	if m.Memory == nil && m.Pids == nil && (m.CPU == nil || m.CPU.Usage == nil || m.CPU.Usage.Total == 0) {
		// Removed between Load and Stat.
		return nil, fmt.Errorf("stat %s: %w", group, os.ErrNotExist)
	}
	c := &Cgroup{Timestamp: now}
	if u := m.CPU.GetUsage(); u != nil {
		c.CPU.UsageNanos, c.CPU.UserNanos, c.CPU.SystemNanos = u.Total, u.User, u.Kernel
	}
	if t := m.CPU.GetThrottling(); t != nil {
		c.CPU.Periods, c.CPU.ThrottledPeriods, c.CPU.ThrottledNanos = t.Periods, t.ThrottledPeriods, t.ThrottledTime
	}
	if m.Memory != nil {
		c.Memory, c.Swap = v1Memory(m.Memory, r.swapAccounted())
		c.Memory.OOMKills = m.MemoryOomControl.GetOomKill()
	}
	if m.Pids != nil {
		c.Pids = Pids{Current: m.Pids.Current, Limit: m.Pids.Limit}
	}
	if m.Blkio != nil {
		c.IO.Devices = v1IO(m.Blkio)
	}
	if d := r.unifiedDir(group); d != "" {
		c.CPU.PSI, c.Memory.PSI, c.IO.PSI = readPSI(d, "cpu.pressure"), readPSI(d, "memory.pressure"), readPSI(d, "io.pressure")
	}
	return c, nil
}

// v1Hierarchy lists only the controllers a read needs: the default
// hierarchy would read every controller, and the memsw/kmem files are
// absent when swap or kernel memory accounting is off.
func (r *Reader) v1Hierarchy() cgroup1.Hierarchy {
	ignored := []string{"kmem", "kmem.tcp"}
	if !r.swapAccounted() {
		ignored = append(ignored, "memsw")
	}
	return func() ([]cgroup1.Subsystem, error) {
		return []cgroup1.Subsystem{
			cgroup1.NewCpuacct(r.Root),
			cgroup1.NewCpu(r.Root),
			cgroup1.NewMemory(r.Root, cgroup1.IgnoreModules(ignored...)),
			cgroup1.NewPids(r.Root),
			cgroup1.NewBlkio(r.Root, cgroup1.ProcRoot(r.Proc)),
		}, nil
	}
}

// swapAccounted reports whether v1 memory accounts swap: the memsw files
// exist only then (swapaccount=1, the default of most kernels).
func (r *Reader) swapAccounted() bool {
	r.swapOnce.Do(func() {
		_, err := os.Stat(filepath.Join(r.Root, "memory", "memory.memsw.usage_in_bytes"))
		r.swapV1 = err == nil
	})
	return r.swapV1
}

// v1Memory converts the memory controller's figures; swap is memsw minus
// memory, both for the usage and the limit, as cAdvisor computes it.
func v1Memory(s *v1stats.MemoryStat, swapAccounted bool) (Memory, *Swap) {
	m := Memory{
		RSS: s.TotalRSS, PageFaults: s.TotalPgFault, MajorPageFaults: s.TotalPgMajFault,
		Cache: s.TotalCache, MappedFile: s.TotalMappedFile, ActiveFile: s.TotalActiveFile, InactiveFile: s.TotalInactiveFile,
	}
	if u := s.Usage; u != nil {
		m.Usage, m.MaxUsage, m.Failcnt = u.Usage, u.Max, u.Failcnt
		if u.Limit < v1Unlimited {
			m.Limit = u.Limit
		}
	}
	m.WorkingSet = workingSet(m.Usage, s.TotalInactiveFile)
	if !swapAccounted || s.Swap == nil {
		return m, nil
	}
	swap := &Swap{}
	if s.Swap.Usage > m.Usage {
		swap.Usage = s.Swap.Usage - m.Usage
	}
	if s.Swap.Limit < v1Unlimited && m.Limit != 0 && s.Swap.Limit > m.Limit {
		swap.Limit = s.Swap.Limit - m.Limit
	}
	return m, swap
}

// v1IO sums the blkio byte and operation counters by device: the
// recursive CFQ/BFQ files where the kernel has them, else the throttle
// files (the library picks).
func v1IO(b *v1stats.BlkIOStat) []IODevice {
	var out []IODevice
	at := func(e *v1stats.BlkIOEntry) *IODevice {
		for i := range out {
			if out[i].Major == e.Major && out[i].Minor == e.Minor {
				return &out[i]
			}
		}
		out = append(out, IODevice{Major: e.Major, Minor: e.Minor, Name: e.Device})
		return &out[len(out)-1]
	}
	for _, e := range b.IoServiceBytesRecursive {
		switch e.Op {
		case "Read":
			at(e).ReadBytes += e.Value
		case "Write":
			at(e).WriteBytes += e.Value
		}
	}
	for _, e := range b.IoServicedRecursive {
		switch e.Op {
		case "Read":
			at(e).Reads += e.Value
		case "Write":
			at(e).Writes += e.Value
		}
	}
	return out
}
