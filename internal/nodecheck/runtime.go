package nodecheck

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go/features"
)

// runtimes checks the binary of every handler: found, its version, its
// `features` (runc 1.1+, crun 1.9+), and what this node asks of it. A
// problem with the default handler is Missing (every pod without a
// RuntimeClass fails); with another, Warn.
func runtimes(ctx context.Context, o *Options, cg cgroups) []Finding {
	handlers := make([]string, 0, len(o.Runtimes))
	for h := range o.Runtimes {
		handlers = append(handlers, h)
	}
	sort.Strings(handlers)
	var out []Finding
	for _, h := range handlers {
		bad, role := Warn, ""
		if h == o.DefaultRuntime {
			bad, role = Missing, ", the default handler"
		}
		out = append(out, runtimeFindings(ctx, o, cg, h, o.Runtimes[h], bad, role)...)
	}
	return out
}

func runtimeFindings(ctx context.Context, o *Options, cg cgroups, handler, path string, bad Status, role string) []Finding {
	area := "runtime " + handler
	bin, err := exec.LookPath(path)
	if err != nil {
		return []Finding{{Area: area, Status: bad, Detail: fmt.Sprintf("%s not found%s", path, role),
			Fix: fmt.Sprintf("install it (Debian: apt-get install %s), or set [runtimes.%s] path", filepath.Base(path), handler)}}
	}
	version, err := firstLine(ctx, bin, "--version")
	if err != nil {
		return []Finding{{Area: area, Status: bad, Detail: fmt.Sprintf("%s --version: %v", bin, err),
			Fix: "reinstall the runtime: it does not run"}}
	}
	f := Finding{Area: area, Status: OK, Detail: fmt.Sprintf("%s (%s)%s", version, bin, role)}
	feats, ferr := runtimeFeatures(ctx, bin)
	if ferr != nil {
		f.Detail += "\nfeatures: not reported (`features` needs runc 1.1+ or crun 1.9+); husk stages rro and idmapped views itself"
	} else {
		f.Detail += "\nfeatures: " + describeFeatures(feats)
	}
	var problems, fixes []string
	if ferr == nil {
		problems, fixes = featureProblems(o, cg, feats)
	}
	if len(problems) > 0 {
		f.Status = bad
		f.Detail += "\n" + strings.Join(problems, "\n")
		f.Fix = strings.Join(fixes, "\n")
	}
	out := []Finding{f}
	if strings.HasPrefix(version, "crun") && cg.hugetlbQuirk() {
		out = append(out, hugetlbFinding(handler, bad))
	}
	return out
}

func firstLine(ctx context.Context, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).Output()
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line, nil
}

func runtimeFeatures(ctx context.Context, bin string) (*features.Features, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "features").Output()
	if err != nil {
		return nil, err
	}
	var f features.Features
	if err := json.Unmarshal(out, &f); err != nil {
		return nil, fmt.Errorf("features: %w", err)
	}
	return &f, nil
}

func yes(b *bool) bool { return b != nil && *b }

func describeFeatures(f *features.Features) string {
	var have, lack []string
	mark := func(name string, ok bool) {
		if ok {
			have = append(have, name)
		} else {
			lack = append(lack, name)
		}
	}
	l := f.Linux
	if l == nil {
		l = &features.Linux{}
	}
	mark("seccomp", l.Seccomp != nil && yes(l.Seccomp.Enabled))
	mark("apparmor", l.Apparmor != nil && yes(l.Apparmor.Enabled))
	mark("selinux", l.Selinux != nil && yes(l.Selinux.Enabled))
	if l.Cgroup != nil {
		mark("cgroup v1", yes(l.Cgroup.V1))
		mark("cgroup v2", yes(l.Cgroup.V2))
		mark("systemd cgroups", yes(l.Cgroup.Systemd))
	}
	mark("user namespaces", slices.Contains(l.Namespaces, "user"))
	mark("rro mounts", slices.Contains(f.MountOptions, "rro"))
	mark("idmap mounts", l.MountExtensions != nil && l.MountExtensions.IDMap != nil && yes(l.MountExtensions.IDMap.Enabled))
	s := strings.Join(have, ", ")
	if len(lack) > 0 {
		s += "; lacks " + strings.Join(lack, ", ")
		if slices.Contains(lack, "idmap mounts") || slices.Contains(lack, "rro mounts") {
			s += " (husk stages idmapped and rro views itself)"
		}
	}
	return s
}

// featureProblems are what this node or config needs of the runtime and
// its features say it lacks.
func featureProblems(o *Options, cg cgroups, f *features.Features) (problems, fixes []string) {
	l := f.Linux
	if l == nil {
		return nil, nil
	}
	if c := l.Cgroup; c != nil {
		switch {
		case cg.mode == modeUnified && c.V2 != nil && !*c.V2:
			problems = append(problems, "no cgroup v2 support, and this node is cgroup v2 only")
			fixes = append(fixes, "install a runtime built with cgroup v2 support")
		case (cg.mode == modeHybrid || cg.mode == modeLegacy) && c.V1 != nil && !*c.V1:
			problems = append(problems, "no cgroup v1 support, and this node's controllers are v1")
			fixes = append(fixes, "install a runtime built with cgroup v1 support, or boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1)")
		}
		if o.CgroupDriver == "systemd" && c.Systemd != nil && !*c.Systemd {
			problems = append(problems, "no systemd cgroup driver, which cgroup_driver asks for")
			fixes = append(fixes, `set cgroup_driver = "cgroupfs", or install a runtime built with systemd support`)
		}
	}
	if l.Seccomp != nil && l.Seccomp.Enabled != nil && !*l.Seccomp.Enabled {
		problems = append(problems, "built without seccomp: pods with a RuntimeDefault or Localhost profile fail")
		fixes = append(fixes, "install a runtime built with libseccomp")
	}
	return problems, fixes
}

// DefaultRuntime is the handler huskd runs pods without a RuntimeClass
// with when its config names none: crun where it is installed and can run
// on this node (a node with v1 controllers needs the hugetlb v1 hierarchy
// for it), else runc. crun, in C, starts a container in less time and
// memory than runc, a Go program that starts the Go runtime twice per
// container (its create and its init); CRI-O defaults to it for the same
// reason. why says what decided.
func DefaultRuntime(o Options) (handler, why string) {
	if o.ProcDir == "" {
		o.ProcDir = "/proc"
	}
	path, ok := o.Runtimes["crun"]
	if !ok {
		return "runc", "no [runtimes.crun] handler"
	}
	if _, err := exec.LookPath(path); err != nil {
		return "runc", "crun is not installed"
	}
	if readCgroups(&o).hugetlbQuirk() {
		return "runc", "crun refuses this node: v1 controllers and no hugetlb v1 hierarchy (" + hugetlbFix + ")"
	}
	return "crun", "crun is installed and can run on this node"
}
