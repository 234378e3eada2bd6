package container

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
)

// cgroupRel turns a runtime cgroupsPath into the path below a hierarchy's
// mount: as is for cgroupfs; for systemd "parent.slice:prefix:name" it is
// the parent slice expanded the way systemd nests slices (a-b.slice lives
// in a.slice) and the unit prefix-name.scope.
func cgroupRel(cgroupsPath, driver string) string {
	if driver != "systemd" {
		return cgroupsPath
	}
	parts := strings.SplitN(cgroupsPath, ":", 3)
	if len(parts) != 3 {
		return cgroupsPath
	}
	slice := strings.TrimSuffix(parts[0], ".slice")
	dir := "/"
	if slice != "" && slice != "-" {
		acc := ""
		for _, p := range strings.Split(slice, "-") {
			if acc != "" {
				acc += "-"
			}
			acc += p
			dir = filepath.Join(dir, acc+".slice")
		}
	}
	return filepath.Join(dir, parts[1]+"-"+parts[2]+".scope")
}

// oomKilled reports whether the kernel's OOM killer killed a process of
// the container's cgroup (cgroup v2 memory.events, or v1 oom_control on
// kernels that count kills).
func oomKilled(cgroupsPath, driver string) bool {
	rel := cgroupRel(cgroupsPath, driver)
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
