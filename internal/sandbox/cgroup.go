package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/huskrt/husk/internal/proc"
)

// hierarchy is one mounted cgroup hierarchy: a v1 controller (or named
// hierarchy) or the v2 unified one.
type hierarchy struct {
	mount string
	// v1 controllers whose files the infra's cgroup sets.
	cpu, cpuset, devices bool
	v2                   bool
}

// cgroupHierarchies lists the mounted hierarchies. A directly started
// infra gets a cgroup of its own in each, as runc gives one (cgroupfs
// driver): v1 controllers and named hierarchies, and the unified one of a
// hybrid or v2 node.
func cgroupHierarchies() ([]hierarchy, error) {
	mounts, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup", "cgroup2"))
	if err != nil {
		return nil, fmt.Errorf("cgroup mounts: %w", err)
	}
	var out []hierarchy
	seen := map[string]bool{}
	for _, m := range mounts {
		if m.Root != "/" || seen[m.Mountpoint] {
			continue // a bind of part of a hierarchy, or mounted twice
		}
		seen[m.Mountpoint] = true
		h := hierarchy{mount: m.Mountpoint, v2: m.FSType == "cgroup2"}
		for _, o := range strings.Split(m.VFSOptions, ",") {
			switch o {
			case "cpu":
				h.cpu = true
			case "cpuset":
				h.cpuset = true
			case "devices":
				h.devices = true
			}
		}
		out = append(out, h)
	}
	return out, nil
}

// infraShares is the infra's CPU weight: it only waits.
const infraShares = 2

// makeInfraCgroup makes the infra's cgroup rel (below the pod's parent)
// in every hierarchy, with the smallest CPU weight and, on v1, no device
// access, and returns the cgroup.procs files to write its PID into.
func (m *Manager) makeInfraCgroup(rel string) ([]string, error) {
	procs := make([]string, 0, len(m.cgroups))
	for _, h := range m.cgroups {
		dir := filepath.Join(h.mount, rel)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return procs, fmt.Errorf("infra cgroup: %w", err)
		}
		procs = append(procs, filepath.Join(dir, "cgroup.procs"))
		if err := setInfraCgroup(h, dir, rel); err != nil {
			return procs, fmt.Errorf("infra cgroup: %w", err)
		}
	}
	return procs, nil
}

// setInfraCgroup sets what the infra's cgroup needs in hierarchy h.
func setInfraCgroup(h hierarchy, dir, rel string) error {
	if h.cpuset {
		if err := inheritCpuset(h.mount, rel); err != nil {
			return err
		}
	}
	if h.cpu {
		if err := writeCgroup(dir, "cpu.shares", strconv.Itoa(infraShares)); err != nil {
			return err
		}
	}
	if h.devices {
		if err := writeCgroup(dir, "devices.deny", "a"); err != nil {
			return err
		}
	}
	// On v2, only where the pod's parent delegates the cpu controller.
	if h.v2 && exists(filepath.Join(dir, "cpu.weight")) {
		return writeCgroup(dir, "cpu.weight", "1")
	}
	return nil
}

// inheritCpuset gives each level of rel that has none its parent's CPUs
// and memory nodes: a v1 cpuset cgroup starts empty, and a process cannot
// join it until both are set.
func inheritCpuset(mount, rel string) error {
	parent := mount
	for _, part := range strings.Split(strings.Trim(rel, "/"), "/") {
		dir := filepath.Join(parent, part)
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			b, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				return err
			}
			if len(strings.TrimSpace(string(b))) > 0 {
				continue
			}
			from, err := os.ReadFile(filepath.Join(parent, f))
			if err != nil {
				return err
			}
			if err := writeCgroup(dir, f, strings.TrimSpace(string(from))); err != nil {
				return err
			}
		}
		parent = dir
	}
	return nil
}

func writeCgroup(dir, file, value string) error {
	if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0); err != nil {
		return fmt.Errorf("set %s: %w", filepath.Join(dir, file), err)
	}
	return nil
}

// removeInfraCgroup removes the infra's cgroup rel in every hierarchy.
// Whatever still runs in it is killed first and waited for: an infra whose
// PID no record kept (a Run a crash cut short) is found there.
func (m *Manager) removeInfraCgroup(ctx context.Context, rel string) error {
	if rel == "" || rel == "/" {
		return nil
	}
	var dirs []string
	for _, h := range m.cgroups {
		if dir := filepath.Join(h.mount, rel); exists(dir) {
			dirs = append(dirs, dir)
		}
	}
	if err := proc.EmptyCgroup(ctx, rel, dirs, 5*time.Millisecond); err != nil {
		return fmt.Errorf("infra cgroup: %w", err)
	}
	var errs []error
	for _, d := range dirs {
		if err := rmdirCgroup(ctx, d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// rmdirCgroup removes an empty cgroup; one whose last process is exiting
// is busy for a moment.
func rmdirCgroup(ctx context.Context, dir string) error {
	for {
		err := unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }
