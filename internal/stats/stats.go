// Package stats reads the resource usage the CRI ContainerStats and
// PodSandboxStats calls report: CPU, memory and process counts of a cgroup
// and interface counters of a pod's network namespace.
package stats

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
)

// Cgroup is a snapshot of one cgroup's usage.
type Cgroup struct {
	// Timestamp is when the snapshot was taken.
	Timestamp time.Time
	// CPUUsageNanos is the cumulative CPU time in nanoseconds.
	CPUUsageNanos uint64
	// MemoryUsageBytes is the memory usage including page cache.
	MemoryUsageBytes uint64
	// MemoryWorkingSetBytes is the usage minus inactive file pages, floored
	// at 0, as the kubelet and cAdvisor compute it.
	MemoryWorkingSetBytes uint64
	// MemoryRSSBytes is the anonymous memory (v1 total_rss, v2 anon).
	MemoryRSSBytes uint64
	// PageFaults and MajorPageFaults are cumulative fault counts.
	PageFaults, MajorPageFaults uint64
	// MemoryAvailableBytes is the limit minus the working set when a limit
	// is set, else 0.
	MemoryAvailableBytes uint64
	// Pids is the current number of tasks; 0 when the pids controller is
	// not available for the cgroup.
	Pids uint64
}

// cgroupRoot is where the v1 controllers or the unified hierarchy are
// mounted; cgroups.Mode assumes the same location.
const cgroupRoot = "/sys/fs/cgroup"

// v1UnlimitedMemory is the limit above which a v1 memory limit counts as
// unset. The kernel reports "no limit" as a page-rounded MaxInt64, so the
// kubelet uses the same threshold rather than an exact value.
const v1UnlimitedMemory = uint64(1) << 62

// ReadCgroup reads the stats of the cgroup at cgroupsPath, which is an OCI
// cgroupsPath either in cgroupfs form ("/parent/name", relative to the
// hierarchy root) or in systemd form ("slice:prefix:name"). A cgroup that
// does not exist returns an error wrapping os.ErrNotExist.
func ReadCgroup(cgroupsPath string) (*Cgroup, error) {
	group, err := groupPath(cgroupsPath)
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", cgroupsPath, err)
	}
	var c *Cgroup
	switch mode := cgroups.Mode(); mode {
	case cgroups.Unified:
		c, err = readV2(group)
	case cgroups.Legacy, cgroups.Hybrid:
		c, err = readV1(group)
	default:
		err = errors.New("no cgroup hierarchy mounted")
	}
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", cgroupsPath, err)
	}
	return c, nil
}

// readV1 reads group from the memory, cpuacct and pids v1 hierarchies.
func readV1(group string) (*Cgroup, error) {
	// Only the controllers the snapshot needs: the default hierarchy would
	// read every controller, and the memsw/kmem files are absent when swap
	// or kernel memory accounting is off.
	hierarchy := func() ([]cgroup1.Subsystem, error) {
		return []cgroup1.Subsystem{
			cgroup1.NewCpuacct(cgroupRoot),
			cgroup1.NewMemory(cgroupRoot, cgroup1.IgnoreModules("memsw", "kmem", "kmem.tcp")),
			cgroup1.NewPids(cgroupRoot),
		}, nil
	}
	cg, err := cgroup1.Load(cgroup1.StaticPath(group), cgroup1.WithHierarchy(hierarchy))
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
	if m.CPU != nil && m.CPU.Usage != nil {
		c.CPUUsageNanos = m.CPU.Usage.Total
	}
	if mem := m.Memory; mem != nil {
		var limit uint64
		if mem.Usage != nil {
			c.MemoryUsageBytes = mem.Usage.Usage
			limit = mem.Usage.Limit
		}
		c.MemoryWorkingSetBytes = workingSet(c.MemoryUsageBytes, mem.TotalInactiveFile)
		c.MemoryRSSBytes = mem.TotalRSS
		c.PageFaults = mem.TotalPgFault
		c.MajorPageFaults = mem.TotalPgMajFault
		if limit != 0 && limit < v1UnlimitedMemory {
			c.MemoryAvailableBytes = available(limit, c.MemoryWorkingSetBytes)
		}
	}
	if m.Pids != nil {
		c.Pids = m.Pids.Current
	}
	return c, nil
}

// readV2 reads group from the unified hierarchy.
func readV2(group string) (*Cgroup, error) {
	// cgroup2.Load does not look at the directory and Stat reports a
	// missing cgroup as zeros, so check existence first.
	if _, err := os.Stat(filepath.Join(cgroupRoot, group)); err != nil {
		return nil, err
	}
	mgr, err := cgroup2.Load(group)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	now := time.Now()
	m, err := mgr.StatFiltered(cgroup2.StatCPU | cgroup2.StatMemory | cgroup2.StatPids)
	if err != nil {
		return nil, fmt.Errorf("stat: %w", err)
	}
	c := &Cgroup{Timestamp: now}
	if m.CPU != nil {
		c.CPUUsageNanos = m.CPU.UsageUsec * 1000
	}
	if mem := m.Memory; mem != nil {
		c.MemoryUsageBytes = mem.Usage
		c.MemoryWorkingSetBytes = workingSet(mem.Usage, mem.InactiveFile)
		c.MemoryRSSBytes = mem.Anon
		c.PageFaults = mem.Pgfault
		c.MajorPageFaults = mem.Pgmajfault
		// "max" reads as MaxUint64; a missing file (root cgroup) as 0.
		if mem.UsageLimit != 0 && mem.UsageLimit != math.MaxUint64 {
			c.MemoryAvailableBytes = available(mem.UsageLimit, c.MemoryWorkingSetBytes)
		}
	}
	if m.Pids != nil {
		c.Pids = m.Pids.Current
	}
	return c, nil
}

// workingSet is usage minus inactive file pages, floored at 0: those pages
// are the first the kernel reclaims, so they do not count as pressure.
func workingSet(usage, inactiveFile uint64) uint64 {
	if inactiveFile > usage {
		return 0
	}
	return usage - inactiveFile
}

// available is limit minus working set, floored at 0.
func available(limit, workingSet uint64) uint64 {
	if workingSet > limit {
		return 0
	}
	return limit - workingSet
}

// GroupPath turns an OCI cgroupsPath (cgroupfs or systemd form) into the
// cgroup's path below a hierarchy's mount point.
func GroupPath(cgroupsPath string) (string, error) { return groupPath(cgroupsPath) }

// groupPath turns an OCI cgroupsPath into a path relative to the hierarchy
// root ("/a/b"), expanding the systemd form as systemd lays units out.
func groupPath(cgroupsPath string) (string, error) {
	if cgroupsPath == "" {
		return "", errors.New("empty cgroups path")
	}
	if strings.HasPrefix(cgroupsPath, "/") {
		return path.Clean(cgroupsPath), nil
	}
	if strings.Count(cgroupsPath, ":") == 2 {
		return systemdPath(cgroupsPath)
	}
	// A relative cgroupfs path is relative to the OCI runtime's own cgroup,
	// which is not known here.
	return "", errors.New("relative cgroupfs path not supported")
}

// systemdPath expands "slice:prefix:name" the way runc's systemd driver
// places the unit: "prefix-name.scope" (or the slice "name" itself when it
// ends in ".slice") under the expanded parent slice, which defaults to
// system.slice.
func systemdPath(cgroupsPath string) (string, error) {
	parts := strings.SplitN(cgroupsPath, ":", 3)
	if len(parts) != 3 {
		return "", fmt.Errorf("systemd cgroups path %q: want slice:prefix:name", cgroupsPath)
	}
	slice, prefix, name := parts[0], parts[1], parts[2]
	if slice == "" {
		slice = "system.slice"
	}
	if name == "" || strings.Contains(name, "/") || strings.Contains(prefix, "/") {
		return "", fmt.Errorf("systemd cgroups path %q: invalid unit name", cgroupsPath)
	}
	parent, err := expandSlice(slice)
	if err != nil {
		return "", fmt.Errorf("systemd cgroups path %q: %w", cgroupsPath, err)
	}
	unit := name
	if !strings.HasSuffix(name, ".slice") {
		unit = name + ".scope"
		if prefix != "" {
			unit = prefix + "-" + unit
		}
	}
	return path.Join(parent, unit), nil
}

// expandSlice turns a slice unit name into its cgroup path: every
// '-'-separated prefix of the name is a parent slice, so
// "a-b.slice" is "/a.slice/a-b.slice". "-.slice" is the root.
func expandSlice(slice string) (string, error) {
	const suffix = ".slice"
	base, ok := strings.CutSuffix(slice, suffix)
	if !ok || base == "" || strings.Contains(slice, "/") {
		return "", fmt.Errorf("invalid slice name %q", slice)
	}
	if base == "-" {
		return "/", nil
	}
	var b strings.Builder
	prefix := ""
	for component := range strings.SplitSeq(base, "-") {
		// "a--b.slice" and "-a.slice" are not valid slice names.
		if component == "" {
			return "", fmt.Errorf("invalid slice name %q", slice)
		}
		b.WriteString("/" + prefix + component + suffix)
		prefix += component + "-"
	}
	return b.String(), nil
}
