package stats

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/cgroups/v3/cgroup2"
	v2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
)

// readV2 reads the Full figures of group from the unified hierarchy.
func (r *Reader) readV2(group string) (*Cgroup, error) {
	dir := filepath.Join(r.Root, group)
	// cgroup2.Load does not look at the directory and Stat reports a
	// missing cgroup as zeros, so check existence first.
	if _, err := os.Stat(dir); err != nil {
		return nil, err
	}
	mgr, err := cgroup2.Load(group, cgroup2.WithMountpoint(r.Root))
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	now := time.Now()
	m, err := mgr.StatFiltered(cgroup2.StatCPU | cgroup2.StatMemory | cgroup2.StatPids | cgroup2.StatMemoryEvents | cgroup2.StatIO)
	if err != nil {
		return nil, fmt.Errorf("stat: %w", err)
	}
	c := &Cgroup{Timestamp: now}
	if s := m.CPU; s != nil {
		c.CPU = CPU{
			UsageNanos: s.UsageUsec * 1000, UserNanos: s.UserUsec * 1000, SystemNanos: s.SystemUsec * 1000,
			Periods: s.NrPeriods, ThrottledPeriods: s.NrThrottled, ThrottledNanos: s.ThrottledUsec * 1000,
			PSI: fromV2PSI(s.PSI),
		}
	}
	if s := m.Memory; s != nil {
		c.Memory = v2Memory(s)
		if _, err := os.Stat(filepath.Join(dir, "memory.swap.current")); err == nil {
			c.Swap = &Swap{Usage: s.SwapUsage, Limit: limit(s.SwapLimit)}
		}
	}
	if e := m.MemoryEvents; e != nil {
		c.Memory.OOMKills = e.OomKill
	}
	if m.Pids != nil {
		c.Pids = Pids{Current: m.Pids.Current, Limit: limit(m.Pids.Limit)}
	}
	if m.Io != nil {
		c.IO.PSI = fromV2PSI(m.Io.PSI)
		for _, e := range m.Io.Usage {
			c.IO.Devices = append(c.IO.Devices, IODevice{Major: e.Major, Minor: e.Minor, Name: r.devices.name(r.Proc, e.Major, e.Minor),
				ReadBytes: e.Rbytes, WriteBytes: e.Wbytes, Reads: e.Rios, Writes: e.Wios})
		}
	}
	return c, nil
}

// v2Memory converts memory.stat, memory.current, memory.max and
// memory.peak.
func v2Memory(s *v2stats.MemoryStat) Memory {
	return Memory{
		Usage: s.Usage, WorkingSet: workingSet(s.Usage, s.InactiveFile), RSS: s.Anon,
		// "max" reads as MaxUint64; a missing file (the root cgroup) as 0.
		Limit:      limit(s.UsageLimit),
		PageFaults: s.Pgfault, MajorPageFaults: s.Pgmajfault,
		Cache: s.File, MappedFile: s.FileMapped, ActiveFile: s.ActiveFile, InactiveFile: s.InactiveFile,
		MaxUsage: s.MaxUsage, PSI: fromV2PSI(s.PSI),
	}
}

// limit turns the library's "max" (MaxUint64) into 0, no limit.
func limit(v uint64) uint64 {
	if v == math.MaxUint64 {
		return 0
	}
	return v
}

// fromV2PSI converts the library's pressure (totals in microseconds, as
// the kernel writes them).
func fromV2PSI(p *v2stats.PSIStats) *PSI {
	if p == nil {
		return nil
	}
	conv := func(d *v2stats.PSIData) PSIData {
		if d == nil {
			return PSIData{}
		}
		return PSIData{TotalNanos: d.Total * 1000, Avg10: d.Avg10, Avg60: d.Avg60, Avg300: d.Avg300}
	}
	return &PSI{Some: conv(p.Some), Full: conv(p.Full)}
}
