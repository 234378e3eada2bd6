package stats

import (
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func u64(v uint64) *runtimeapi.UInt64Value { return &runtimeapi.UInt64Value{Value: v} }

// CRICPU is the snapshot's CPU as the CRI reports it.
func (c *Cgroup) CRICPU() *runtimeapi.CpuUsage {
	return &runtimeapi.CpuUsage{Timestamp: c.Timestamp.UnixNano(), UsageCoreNanoSeconds: u64(c.CPU.UsageNanos), Psi: c.CPU.PSI.cri()}
}

// CRIMemory is the snapshot's memory as the CRI reports it.
func (c *Cgroup) CRIMemory() *runtimeapi.MemoryUsage {
	m := c.Memory
	return &runtimeapi.MemoryUsage{
		Timestamp: c.Timestamp.UnixNano(), WorkingSetBytes: u64(m.WorkingSet), AvailableBytes: u64(m.Available()),
		UsageBytes: u64(m.Usage), RssBytes: u64(m.RSS), PageFaults: u64(m.PageFaults), MajorPageFaults: u64(m.MajorPageFaults),
		Psi: m.PSI.cri(),
	}
}

// CRISwap is the snapshot's swap as the CRI reports it; nil where the
// cgroup does not account swap.
func (c *Cgroup) CRISwap() *runtimeapi.SwapUsage {
	if c.Swap == nil {
		return nil
	}
	return &runtimeapi.SwapUsage{Timestamp: c.Timestamp.UnixNano(), SwapUsageBytes: u64(c.Swap.Usage), SwapAvailableBytes: u64(c.Swap.Available())}
}

// CRIIO is the snapshot's IO as the CRI reports it: only its pressure,
// the one field of IoUsage; nil without pressure.
func (c *Cgroup) CRIIO() *runtimeapi.IoUsage {
	if c.IO.PSI == nil {
		return nil
	}
	return &runtimeapi.IoUsage{Timestamp: c.Timestamp.UnixNano(), Psi: c.IO.PSI.cri()}
}

// CRIProcess is the snapshot's process count as the CRI reports it.
func (c *Cgroup) CRIProcess() *runtimeapi.ProcessUsage {
	return &runtimeapi.ProcessUsage{Timestamp: c.Timestamp.UnixNano(), ProcessCount: u64(c.Pids.Current)}
}

func (p *PSI) cri() *runtimeapi.PsiStats {
	if p == nil {
		return nil
	}
	d := func(d PSIData) *runtimeapi.PsiData {
		return &runtimeapi.PsiData{Total: d.TotalNanos, Avg10: d.Avg10, Avg60: d.Avg60, Avg300: d.Avg300}
	}
	return &runtimeapi.PsiStats{Some: d(p.Some), Full: d(p.Full)}
}
