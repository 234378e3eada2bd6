// Package nodecheck tells what a node offers husk and what it lacks
// (`huskd check`): the runtimes of every handler, CNI plugins and config,
// cgroups, overlayfs, idmapped mounts, pidfd, iptables, the LSMs and
// seccomp, and the hugetlb quirk crun has on v1 hosts. Each finding that is
// not fine says what to do about it. It only reads: it creates nothing on
// the node but a short-lived probe mount and process, both removed.
package nodecheck

import (
	"context"
	"fmt"
	"io"
	"strings"
)

// Status grades a finding.
type Status int

const (
	// OK: the node offers it.
	OK Status = iota
	// Warn: husk runs, but some pods will fail or lose a feature.
	Warn
	// Missing: husk needs it; huskd or every pod fails without it.
	Missing
)

func (s Status) String() string {
	return [...]string{"ok", "warn", "MISSING"}[s]
}

// Finding is one thing checked.
type Finding struct {
	Area   string
	Status Status
	// Detail is what the node has (or lacks).
	Detail string
	// Fix says what to do; empty when Status is OK.
	Fix string
}

// Helper is one of huskd's own binaries, as huskd would find it.
type Helper struct {
	Name string
	Path string
	Err  error
}

// Options is what huskd's config says the node must offer.
type Options struct {
	// Runtimes maps each RuntimeClass handler to its binary.
	Runtimes        map[string]string
	DefaultRuntime  string
	CNIConfDir      string
	CNIBinDirs      []string
	CNIWriteDefault bool
	CgroupDriver    string
	// Root is huskd's root dir: image layers live on its filesystem, so
	// the idmapped mount probe runs there.
	Root    string
	Helpers []Helper
	// Pause runs the idmapped mount probe in a user namespace; "" skips it.
	Pause string
	// ProcDir, SysDir and RunDir are /proc, /sys and /run unless a test
	// says otherwise.
	ProcDir, SysDir, RunDir string
	// Root privileges: the probes need them.
	IsRoot bool
}

func (o *Options) proc(p string) string { return o.ProcDir + "/" + p }
func (o *Options) sys(p string) string  { return o.SysDir + "/" + p }

// Run checks everything, in the order it is printed.
func Run(ctx context.Context, o Options) []Finding {
	if o.ProcDir == "" {
		o.ProcDir = "/proc"
	}
	if o.SysDir == "" {
		o.SysDir = "/sys"
	}
	if o.RunDir == "" {
		o.RunDir = "/run"
	}
	cg := readCgroups(&o)
	var out []Finding
	out = append(out, helpers(o.Helpers)...)
	out = append(out, runtimes(ctx, &o, cg)...)
	out = append(out, cni(&o)...)
	out = append(out, cgroupFindings(&o, cg)...)
	out = append(out, overlay(&o), idmap(&o), pidfd(), iptables(ctx))
	out = append(out, appArmor(&o), seLinux(&o), seccomp(&o))
	return out
}

// Write prints the findings and returns how many are Missing.
func Write(w io.Writer, findings []Finding) (missing int) {
	warn := 0
	for _, f := range findings {
		fmt.Fprintf(w, "%-8s %-22s %s\n", f.Status, f.Area, indent(f.Detail, 32))
		if f.Fix != "" {
			fmt.Fprintf(w, "%32s%s\n", "fix: ", indent(f.Fix, 37))
		}
		switch f.Status {
		case Missing:
			missing++
		case Warn:
			warn++
		}
	}
	fmt.Fprintf(w, "\n%d missing (husk needs it), %d warnings (some pods fail or lose a feature)\n", missing, warn)
	return missing
}

func indent(s string, n int) string {
	return strings.ReplaceAll(s, "\n", "\n"+strings.Repeat(" ", n))
}

func helpers(hs []Helper) []Finding {
	var out []Finding
	for _, h := range hs {
		if h.Err != nil {
			out = append(out, Finding{Area: h.Name, Status: Missing, Detail: h.Err.Error(),
				Fix: "install it beside huskd (make install does), or on PATH"})
			continue
		}
		out = append(out, Finding{Area: h.Name, Status: OK, Detail: h.Path})
	}
	return out
}
