package container

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"

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
