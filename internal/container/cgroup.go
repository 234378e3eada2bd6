package container

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/huskrt/husk/internal/proc"
	"github.com/huskrt/husk/internal/stats"
)

// oomKilled reports whether the kernel's OOM killer killed a process of
// the container's cgroup (cgroup v2 memory.events, or v1 oom_control on
// kernels that count kills).
func oomKilled(cgroupsPath string) bool {
	rel, err := stats.GroupPath(cgroupsPath)
	if err != nil {
		return false
	}
	for _, f := range []string{
		filepath.Join("/sys/fs/cgroup", rel, "memory.events"),
		filepath.Join("/sys/fs/cgroup/memory", rel, "memory.oom_control"),
	} {
		if n, ok := readKey(f, "oom_kill"); ok {
			return n != "0"
		}
	}
	return false
}

// readKey reads "key value" lines.
func readKey(path, key string) (string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), " "); ok && k == key {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// deleteRuntime deletes the container from its runtime, which kills what
// is left of it, and waits until no process is left in its cgroup. The
// runtime kills the processes besides the init (a container that shares
// the node's or the pod's PID namespace keeps them when its init exits)
// but does not wait for them; one that takes its time to die (in
// uninterruptible I/O, or freeing a large memory) would otherwise outlive
// RemovePodSandbox in the pod's network namespace (issue 11, item 10).
func (m *Manager) deleteRuntime(ctx context.Context, rec *Record) error {
	rt, err := m.opts.Runtimes.Get(rec.Handler)
	if err != nil {
		return err
	}
	if err := rt.Delete(ctx, rec.ID); err != nil {
		return err
	}
	if err := emptyCgroup(ctx, rec.CgroupsPath); err != nil {
		return fmt.Errorf("container %s: %w", rec.ID, err)
	}
	return nil
}

// cgroupRoot is where the cgroup hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// emptyCgroup kills every process left in the cgroup (in every hierarchy
// where it exists, its sub-cgroups included), waits until none is left,
// then removes the cgroup's directories the runtime could not remove
// while they were in use.
func emptyCgroup(ctx context.Context, cgroupsPath string) error {
	rel, err := stats.GroupPath(cgroupsPath)
	if err != nil || rel == "/" {
		return nil // no cgroup of its own to wait for
	}
	dirs := cgroupDirs(rel)
	if err := proc.EmptyCgroup(ctx, rel, dirs, 20*time.Millisecond); err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := unix.Rmdir(dirs[i]); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove cgroup %s: %w", dirs[i], err)
		}
	}
	return nil
}

// cgroupDirs lists the cgroup's directories and their sub-cgroups in
// every hierarchy (v1 controllers, the v2 or hybrid unified one), parents
// before children.
func cgroupDirs(rel string) []string {
	mounts, _ := filepath.Glob(filepath.Join(cgroupRoot, "*"))
	mounts = append(mounts, cgroupRoot)
	var dirs []string
	for _, mnt := range mounts {
		base := filepath.Join(mnt, rel)
		if _, err := os.Stat(filepath.Join(base, "cgroup.procs")); err != nil {
			continue
		}
		_ = filepath.WalkDir(base, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	return dirs
}
