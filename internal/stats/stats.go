// Package stats reads the resource usage the CRI stats and metrics calls
// report: CPU, memory, swap, block IO, pressure (PSI) and process counts of
// a cgroup, on cgroup v1, v2 and the hybrid layout, interface counters of a
// pod's network namespace, and the cAdvisor-named metrics built from them.
package stats

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/cgroups/v3"
)

// Cgroup is a snapshot of one cgroup's usage.
type Cgroup struct {
	// Timestamp is when the snapshot was taken.
	Timestamp time.Time
	CPU       CPU
	Memory    Memory
	// Swap is nil where the cgroup does not account swap (v1 without
	// swap accounting, v2 without the memory.swap files).
	Swap *Swap
	IO   IO
	Pids Pids
}

// CPU is a cgroup's CPU time. The throttling counters and the user/system
// split are read only by a Full read.
type CPU struct {
	UsageNanos, UserNanos, SystemNanos uint64
	Periods, ThrottledPeriods          uint64
	ThrottledNanos                     uint64
	// PSI is nil where the kernel offers no pressure file for the cgroup.
	PSI *PSI
}

// Memory is a cgroup's memory usage.
type Memory struct {
	// Usage includes the page cache; WorkingSet is Usage minus the
	// inactive file pages, floored at 0, as the kubelet and cAdvisor
	// compute it; RSS is the anonymous memory (v1 total_rss, v2 anon).
	Usage, WorkingSet, RSS uint64
	// Limit is 0 when the cgroup has none.
	Limit                       uint64
	PageFaults, MajorPageFaults uint64
	// Read only by a Full read: the page cache, mapped files, file LRUs,
	// the high-water mark (v1 max_usage_in_bytes, v2 memory.peak), the v1
	// limit hit count, and the OOM kills of the cgroup.
	Cache, MappedFile, ActiveFile, InactiveFile uint64
	MaxUsage, Failcnt, OOMKills                 uint64
	PSI                                         *PSI
}

// Available is the limit minus the working set, floored at 0; 0 without a
// limit, as the CRI defines it.
func (m Memory) Available() uint64 {
	if m.Limit == 0 || m.WorkingSet > m.Limit {
		return 0
	}
	return m.Limit - m.WorkingSet
}

// Swap is a cgroup's swap usage; Limit is 0 when there is none.
type Swap struct {
	Usage, Limit uint64
}

// Available is the limit minus the usage, floored at 0; 0 without a limit.
func (s Swap) Available() uint64 {
	if s.Limit == 0 || s.Usage > s.Limit {
		return 0
	}
	return s.Limit - s.Usage
}

// IO is a cgroup's block IO: per device counters (Full reads only) and
// pressure.
type IO struct {
	Devices []IODevice
	PSI     *PSI
}

// IODevice is the IO of a cgroup on one block device. Name is "/dev/<name>"
// from /proc/partitions, empty for a device not listed there.
type IODevice struct {
	Major, Minor          uint64
	Name                  string
	ReadBytes, WriteBytes uint64
	Reads, Writes         uint64
}

// Pids is the number of tasks and the pids limit (0 when none; Full reads
// only). Current is 0 where the pids controller is not available.
type Pids struct {
	Current, Limit uint64
}

// PSI is a resource's pressure: Some is the share of time at least one
// task waited on it, Full the share of time all tasks did. Full is zero
// for CPU outside the root cgroup on older kernels.
type PSI struct {
	Some, Full PSIData
}

// PSIData is one pressure line: the total stall time and its averages (in
// percent) over 10, 60 and 300 seconds.
type PSIData struct {
	TotalNanos           uint64
	Avg10, Avg60, Avg300 float64
}

// Detail selects what a read gathers: the CRI stats calls are polled for
// every container and need fewer files than the metrics.
type Detail int

const (
	// Basic is what ContainerStats reports: CPU usage, memory usage and
	// its breakdown from memory.stat, swap, process count and pressure
	// (basic.go).
	Basic Detail = iota
	// Pod is Basic without swap, which PodSandboxStats does not carry.
	Pod
	// Full adds what only the cAdvisor metrics report: CPU time by mode
	// and throttling, the memory high-water mark, limit hits and OOM
	// kills, per-device IO and the pids limit.
	Full
)

// Reader reads cgroup snapshots from a cgroupfs layout. The zero Reader is
// not usable; NewReader detects the machine's layout.
type Reader struct {
	// Mode is the layout: cgroups.Unified, Legacy or Hybrid.
	Mode cgroups.CGMode
	// Root is where the v1 controllers or the unified hierarchy are
	// mounted.
	Root string
	// Unified is the cgroup2 mount of a hybrid layout. It holds no
	// controller, but runc and crun place their containers there too, and
	// the kernel keeps their pressure files: PSI comes from there.
	Unified string
	// Proc is procfs, for the names of block devices.
	Proc string

	// swapOnce and swapV1 say whether v1 memory accounts swap (memsw).
	swapOnce sync.Once
	swapV1   bool
	swap     swapDevices
	devices  deviceNames
	// files keeps the files of the cgroups of Basic reads open.
	files fileCache
}

// NewReader returns a Reader of this machine's cgroup layout.
func NewReader() *Reader {
	return &Reader{Mode: cgroups.Mode(), Root: "/sys/fs/cgroup", Unified: "/sys/fs/cgroup/unified", Proc: "/proc"}
}

var (
	hostOnce   sync.Once
	hostReader *Reader
)

// Host is the Reader of this machine's cgroups.
func Host() *Reader {
	hostOnce.Do(func() { hostReader = NewReader() })
	return hostReader
}

// ReadCgroup reads the Basic stats of a cgroup of this machine; see
// Reader.Read.
func ReadCgroup(cgroupsPath string) (*Cgroup, error) { return Host().Read(cgroupsPath, Basic) }

// Read reads the stats of the cgroup at cgroupsPath, which is an OCI
// cgroupsPath either in cgroupfs form ("/parent/name", relative to the
// hierarchy root) or in systemd form ("slice:prefix:name"). A cgroup that
// does not exist returns an error wrapping os.ErrNotExist.
func (r *Reader) Read(cgroupsPath string, detail Detail) (*Cgroup, error) {
	group, err := groupPath(cgroupsPath)
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", cgroupsPath, err)
	}
	var c *Cgroup
	switch {
	case r.Mode == cgroups.Unavailable:
		err = errors.New("no cgroup hierarchy mounted")
	case detail == Basic || detail == Pod:
		c, err = r.readBasic(group, detail == Basic)
	case r.Mode == cgroups.Unified:
		c, err = r.readV2(group)
	default:
		c, err = r.readV1(group)
	}
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", cgroupsPath, err)
	}
	return c, nil
}

// Forget closes the files kept open to read the cgroup at cgroupsPath:
// its owner (a container, a pod) is gone. Reading it again opens them
// again.
func (r *Reader) Forget(cgroupsPath string) {
	if group, err := groupPath(cgroupsPath); err == nil {
		r.files.forget(group)
	}
}

// unifiedDir is the group's directory in the unified hierarchy of a hybrid
// layout, or "" when the group has none there (a runtime that does not
// place its containers there; runc 1.1 and crun 1.8 both do).
func (r *Reader) unifiedDir(group string) string {
	if r.Mode != cgroups.Hybrid || r.Unified == "" {
		return ""
	}
	d := filepath.Join(r.Unified, group)
	if _, err := os.Stat(d); err != nil {
		return ""
	}
	return d
}

// workingSet is usage minus inactive file pages, floored at 0: those pages
// are the first the kernel reclaims, so they do not count as pressure.
func workingSet(usage, inactiveFile uint64) uint64 {
	if inactiveFile > usage {
		return 0
	}
	return usage - inactiveFile
}
