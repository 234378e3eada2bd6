package nodecheck

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Cgroup modes, as containerd/cgroups names them.
const (
	modeUnified = "unified" // cgroup2 only
	modeHybrid  = "hybrid"  // v1 controllers, cgroup2 beside them
	modeLegacy  = "legacy"  // v1 only
)

// cgroups is the node's cgroup layout, from mountinfo and /proc/cgroups.
type cgroups struct {
	mode string // "" when no cgroup filesystem is mounted
	// v1 maps each controller to the mount point of its v1 hierarchy.
	v1 map[string]string
	// unified is where cgroup2 is mounted, "" for none.
	unified string
	// enabled are the controllers the kernel has, switched on.
	enabled map[string]bool
	// v2 are the controllers the cgroup2 root offers.
	v2  []string
	err error
}

func readCgroups(o *Options) cgroups {
	cg := cgroups{v1: map[string]string{}, enabled: map[string]bool{}}
	f, err := os.Open(o.proc("self/mountinfo"))
	if err != nil {
		cg.err = err
		return cg
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		left, right, ok := strings.Cut(sc.Text(), " - ")
		lf, rf := strings.Fields(left), strings.Fields(right)
		if !ok || len(lf) < 5 || len(rf) < 3 {
			continue
		}
		switch rf[0] {
		case "cgroup2":
			if cg.unified == "" || lf[4] == "/sys/fs/cgroup" {
				cg.unified = lf[4]
			}
		case "cgroup":
			for _, opt := range strings.Split(rf[2], ",") {
				if opt != "rw" && opt != "ro" && !strings.Contains(opt, "=") {
					cg.v1[opt] = lf[4]
				}
			}
		}
	}
	switch {
	case cg.unified == "/sys/fs/cgroup":
		cg.mode = modeUnified
	case len(cg.v1) > 0 && cg.unified != "":
		cg.mode = modeHybrid
	case len(cg.v1) > 0:
		cg.mode = modeLegacy
	}
	if b, err := os.ReadFile(o.proc("cgroups")); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) == 4 && !strings.HasPrefix(f[0], "#") && f[3] == "1" {
				cg.enabled[f[0]] = true
			}
		}
	}
	if cg.unified != "" {
		// The mount point is absolute; tests give a SysDir of their own.
		p := filepath.Join(o.SysDir, strings.TrimPrefix(cg.unified, "/sys"), "cgroup.controllers")
		if b, err := os.ReadFile(p); err == nil {
			cg.v2 = strings.Fields(string(b))
		}
	}
	return cg
}

func (cg cgroups) describe() string {
	switch cg.mode {
	case modeUnified:
		return "cgroup v2 (unified) at " + cg.unified
	case modeHybrid:
		return "hybrid: v1 controllers, cgroup2 at " + cg.unified + " (runtimes use v1)"
	case modeLegacy:
		return "cgroup v1 (legacy)"
	}
	return "no cgroup filesystem mounted"
}

func cgroupFindings(o *Options, cg cgroups) []Finding {
	if cg.err != nil || cg.mode == "" {
		detail := cg.describe()
		if cg.err != nil {
			detail = cg.err.Error()
		}
		return []Finding{{Area: "cgroups", Status: Missing, Detail: detail,
			Fix: "mount cgroup2 at /sys/fs/cgroup (systemd does at boot), or the v1 hierarchies"}}
	}
	need, want := []string{"cpu", "memory", "pids"}, []string{"cpuset", "hugetlb"}
	have := func(c string) bool { return slices.Contains(cg.v2, c) }
	if cg.mode != modeUnified {
		need = append(need, "cpuacct", "devices")
		want = []string{"cpuset", "blkio", "hugetlb"}
		have = func(c string) bool { _, ok := cg.v1[c]; return ok && cg.enabled[c] }
	} else {
		want = append(want, "io")
	}
	out := []Finding{{Area: "cgroups", Status: OK, Detail: cg.describe()}}
	var missing, absent []string
	for _, c := range need {
		if !have(c) {
			missing = append(missing, c)
		}
	}
	for _, c := range want {
		if !have(c) {
			absent = append(absent, c)
		}
	}
	switch {
	case len(missing) > 0:
		out[0].Status = Missing
		out[0].Detail += "\ncontrollers missing: " + strings.Join(missing, ", ")
		out[0].Fix = "enable and mount them (kernel config, cgroup_enable= on the kernel command line); pods get no limits without them"
	case len(absent) > 0:
		out[0].Status = Warn
		out[0].Detail += "\ncontrollers absent: " + strings.Join(absent, ", ")
		out[0].Fix = "pods asking for their limits get none; enable them in the kernel and mount them"
	}
	out = append(out, cgroupDriver(o))
	return out
}

func cgroupDriver(o *Options) Finding {
	f := Finding{Area: "cgroup driver", Status: OK, Detail: o.CgroupDriver + " (the kubelet's cgroupDriver must be the same)"}
	if o.CgroupDriver == "systemd" {
		if _, err := os.Stat(filepath.Join(o.RunDir, "systemd/system")); err != nil {
			f.Status = Missing
			f.Detail = "systemd, but systemd is not PID 1 here"
			f.Fix = `set cgroup_driver = "cgroupfs" (and the kubelet's cgroupDriver), or boot with systemd`
		}
	}
	return f
}

// hugetlbQuirk is set when crun would refuse this node: with v1
// controllers crun wants a hugetlb v1 hierarchy whenever the kernel has the
// controller (scripts/deps.sh mounts one).
func (cg cgroups) hugetlbQuirk() bool {
	_, mounted := cg.v1["hugetlb"]
	return cg.mode != modeUnified && cg.mode != "" && cg.enabled["hugetlb"] && !mounted
}

const hugetlbFix = "mkdir -p /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb (scripts/deps.sh does it; add it to the boot, e.g. an fstab line)"

func hugetlbFinding(handler string, bad Status) Finding {
	return Finding{Area: "runtime " + handler, Status: bad,
		Detail: "crun refuses this node: v1 controllers and no hugetlb v1 hierarchy, though the kernel has the controller",
		Fix:    hugetlbFix}
}
