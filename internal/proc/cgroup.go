package proc

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// EmptyCgroup SIGKILLs every live process in dirs (the directories of the
// cgroup rel in its hierarchies) and polls every interval until none is
// left. Zombies count as gone: they have left every namespace already and
// wait only for their parent.
func EmptyCgroup(ctx context.Context, rel string, dirs []string, interval time.Duration) error {
	for {
		left := liveInCgroups(dirs)
		if len(left) == 0 {
			return nil
		}
		for _, pid := range left {
			killInCgroup(pid, rel)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("processes %v still in cgroup %s: %w", left, rel, ctx.Err())
		case <-time.After(interval):
		}
	}
}

// liveInCgroups lists the live processes of the cgroup.procs files in dirs.
func liveInCgroups(dirs []string) []int {
	seen := map[int]bool{}
	var out []int
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(f)
			if err != nil || seen[pid] {
				continue
			}
			seen[pid] = true
			if _, err := StartTime(pid); err == nil {
				out = append(out, pid)
			}
		}
	}
	return out
}

// killInCgroup SIGKILLs pid through a pidfd, once the pidfd is known to
// hold a process of the cgroup rel or one below it: a PID read from
// cgroup.procs may name another process by now.
func killInCgroup(pid int, rel string) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		// hierarchy-ID:controllers:path
		if f := strings.SplitN(line, ":", 3); len(f) == 3 && (f[2] == rel || strings.HasPrefix(f[2], rel+"/")) {
			_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
			return
		}
	}
}
