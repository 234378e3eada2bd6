package stats

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

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
	if strings.HasSuffix(cgroupsPath, ".slice") && !strings.ContainsAny(cgroupsPath, "/:") {
		// A systemd cgroup parent: the slice itself.
		return expandSlice(cgroupsPath)
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
