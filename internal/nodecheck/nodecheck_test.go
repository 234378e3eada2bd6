package nodecheck

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Mount tables of the three cgroup layouts.
const (
	hybridMounts = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
38 31 0:35 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
39 31 0:36 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	hugetlbMount  = "42 31 0:39 / /sys/fs/cgroup/hugetlb rw,relatime - cgroup cgroup rw,hugetlb\n"
	unifiedMounts = "30 23 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate\n"
	procCgroups   = `#subsys_name	hierarchy	num_cgroups	enabled
cpuset	3	18	1
cpu	1	18	1
cpuacct	1	19	1
blkio	7	18	1
memory	4	207	1
devices	5	18	1
hugetlb	10	18	1
pids	8	19	1
`
)

// node is a fake /proc, /sys and /run.
type node struct {
	dir string
}

func newNode(t *testing.T, files map[string]string) *node {
	t.Helper()
	n := &node{dir: t.TempDir()}
	for p, content := range files {
		full := filepath.Join(n.dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

func (n *node) options() Options {
	return Options{ProcDir: filepath.Join(n.dir, "proc"), SysDir: filepath.Join(n.dir, "sys"), RunDir: filepath.Join(n.dir, "run"),
		CgroupDriver: "cgroupfs"}
}

func TestCgroups(t *testing.T) {
	tests := []struct {
		name       string
		files      map[string]string
		driver     string
		wantMode   string
		wantStatus Status
		want       string // in the details
		wantQuirk  bool
		wantDriver Status
	}{
		{name: "hybrid with hugetlb", files: map[string]string{"proc/self/mountinfo": hybridMounts + hugetlbMount, "proc/cgroups": procCgroups},
			wantMode: modeHybrid, wantStatus: OK, want: "cgroup2 at /sys/fs/cgroup/unified"},
		{name: "hybrid without hugetlb", files: map[string]string{"proc/self/mountinfo": hybridMounts, "proc/cgroups": procCgroups},
			wantMode: modeHybrid, wantStatus: Warn, want: "controllers absent: hugetlb", wantQuirk: true},
		{name: "legacy without memory", files: map[string]string{
			"proc/self/mountinfo": strings.ReplaceAll(hybridMounts, "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n", ""),
			"proc/cgroups":        strings.ReplaceAll(procCgroups, "memory	4	207	1", "memory	4	207	0")},
			wantMode: modeLegacy, wantStatus: Missing, want: "controllers missing: memory", wantQuirk: true},
		{name: "unified", files: map[string]string{"proc/self/mountinfo": unifiedMounts, "proc/cgroups": procCgroups,
			"sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n"},
			wantMode: modeUnified, wantStatus: OK, want: "cgroup v2 (unified)"},
		{name: "unified without pids", files: map[string]string{"proc/self/mountinfo": unifiedMounts, "proc/cgroups": procCgroups,
			"sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory hugetlb\n"},
			wantMode: modeUnified, wantStatus: Missing, want: "controllers missing: pids"},
		{name: "none", files: map[string]string{"proc/self/mountinfo": "1 0 0:1 / / rw - ext4 /dev/sda rw\n"},
			wantStatus: Missing, want: "no cgroup filesystem"},
		{name: "systemd driver without systemd", driver: "systemd",
			files:    map[string]string{"proc/self/mountinfo": unifiedMounts, "sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory hugetlb pids\n"},
			wantMode: modeUnified, wantStatus: OK, wantDriver: Missing},
		{name: "systemd driver under systemd", driver: "systemd",
			files: map[string]string{"proc/self/mountinfo": unifiedMounts, "sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory hugetlb pids\n",
				"run/systemd/system/.keep": ""},
			wantMode: modeUnified, wantStatus: OK, wantDriver: OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := newNode(t, tt.files).options()
			if tt.driver != "" {
				o.CgroupDriver = tt.driver
			}
			cg := readCgroups(&o)
			if cg.mode != tt.wantMode {
				t.Errorf("mode %q, want %q", cg.mode, tt.wantMode)
			}
			if cg.hugetlbQuirk() != tt.wantQuirk {
				t.Errorf("hugetlb quirk %v, want %v", cg.hugetlbQuirk(), tt.wantQuirk)
			}
			fs := cgroupFindings(&o, cg)
			if fs[0].Status != tt.wantStatus || !strings.Contains(fs[0].Detail, tt.want) {
				t.Errorf("finding %+v, want status %v and %q", fs[0], tt.wantStatus, tt.want)
			}
			if fs[0].Status != OK && fs[0].Fix == "" {
				t.Errorf("no fix for %+v", fs[0])
			}
			if len(fs) > 1 && fs[1].Status != tt.wantDriver {
				t.Errorf("driver finding %+v, want %v", fs[1], tt.wantDriver)
			}
		})
	}
}

// fakeRuntime writes a runtime binary that prints version and features.
func fakeRuntime(t *testing.T, dir, name, version, features string) string {
	t.Helper()
	script := "#!/bin/sh\ncase \"$1\" in\n--version) echo '" + version + "'; echo 'commit: x';;\n"
	if features != "" {
		script += "features) cat <<'EOF'\n" + features + "\nEOF\n;;\n"
	}
	script += "*) echo \"unknown command $1\" >&2; exit 1;;\nesac\n"
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

const runcFeatures = `{"ociVersionMin": "1.0.0", "mountOptions": ["ro", "rro"],
 "linux": {"namespaces": ["user", "pid"], "cgroup": {"v1": true, "v2": true, "systemd": true},
  "seccomp": {"enabled": true}, "apparmor": {"enabled": true}, "selinux": {"enabled": true},
  "mountExtensions": {"idmap": {"enabled": true}}}}`

func TestRuntimes(t *testing.T) {
	bin := t.TempDir()
	runc := fakeRuntime(t, bin, "runc", "runc version 1.2.5", runcFeatures)
	crun := fakeRuntime(t, bin, "crun", "crun version 1.8.1", "")
	noV1 := fakeRuntime(t, bin, "runc-v2only", "runc version 1.2.5", strings.Replace(runcFeatures, `"v1": true`, `"v1": false`, 1))
	noSeccomp := fakeRuntime(t, bin, "runc-noseccomp", "runc version 1.2.5", strings.Replace(runcFeatures, `"seccomp": {"enabled": true}`, `"seccomp": {"enabled": false}`, 1))
	hybrid := map[string]string{"proc/self/mountinfo": hybridMounts, "proc/cgroups": procCgroups}
	withHugetlb := map[string]string{"proc/self/mountinfo": hybridMounts + hugetlbMount, "proc/cgroups": procCgroups}
	tests := []struct {
		name     string
		files    map[string]string
		runtimes map[string]string
		def      string
		want     []Finding // Area, Status and a substring of Detail (or of Fix)
	}{
		{"runc with features", withHugetlb, map[string]string{"runc": runc}, "runc", []Finding{
			{Area: "runtime runc", Status: OK, Detail: "runc version 1.2.5 (" + runc + "), the default handler\nfeatures: seccomp, apparmor, selinux, cgroup v1, cgroup v2, systemd cgroups, user namespaces, rro mounts, idmap mounts"}}},
		{"crun without features", withHugetlb, map[string]string{"runc": runc, "crun": crun}, "runc", []Finding{
			{Area: "runtime crun", Status: OK, Detail: "features: not reported"},
			{Area: "runtime runc", Status: OK, Detail: "the default handler"}}},
		{"hugetlb quirk on another handler", hybrid, map[string]string{"runc": runc, "crun": crun}, "runc", []Finding{
			{Area: "runtime crun", Status: OK, Detail: "crun version 1.8.1"},
			{Area: "runtime crun", Status: Warn, Detail: "no hugetlb v1 hierarchy", Fix: "mount -t cgroup -o hugetlb"},
			{Area: "runtime runc", Status: OK}}},
		{"hugetlb quirk on the default handler", hybrid, map[string]string{"crun": crun}, "crun", []Finding{
			{Area: "runtime crun", Status: OK},
			{Area: "runtime crun", Status: Missing, Fix: "scripts/deps.sh"}}},
		{"missing default", hybrid, map[string]string{"runc": filepath.Join(bin, "nosuch")}, "runc", []Finding{
			{Area: "runtime runc", Status: Missing, Detail: "not found, the default handler", Fix: "apt-get install nosuch"}}},
		{"missing other", hybrid, map[string]string{"runc": runc, "kata": "kata-runtime-nosuch"}, "runc", []Finding{
			{Area: "runtime kata", Status: Warn, Detail: "kata-runtime-nosuch not found", Fix: "[runtimes.kata] path"},
			{Area: "runtime runc", Status: OK}}},
		{"no cgroup v1 on a v1 node", withHugetlb, map[string]string{"runc": noV1}, "runc", []Finding{
			{Area: "runtime runc", Status: Missing, Detail: "no cgroup v1 support", Fix: "cgroup v1 support"}}},
		{"no seccomp", withHugetlb, map[string]string{"runc": noSeccomp}, "runc", []Finding{
			{Area: "runtime runc", Status: Missing, Detail: "built without seccomp", Fix: "libseccomp"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := newNode(t, tt.files).options()
			o.Runtimes, o.DefaultRuntime = tt.runtimes, tt.def
			got := runtimes(context.Background(), &o, readCgroups(&o))
			if len(got) != len(tt.want) {
				t.Fatalf("got %d findings, want %d: %+v", len(got), len(tt.want), got)
			}
			for i, w := range tt.want {
				g := got[i]
				if g.Area != w.Area || g.Status != w.Status || !strings.Contains(g.Detail, w.Detail) || !strings.Contains(g.Fix, w.Fix) {
					t.Errorf("finding %d = %+v, want %+v", i, g, w)
				}
				if g.Status != OK && g.Fix == "" {
					t.Errorf("finding %d has no fix: %+v", i, g)
				}
			}
		})
	}
}

func TestCNI(t *testing.T) {
	plugins := t.TempDir()
	for _, p := range []string{"bridge", "host-local"} {
		if err := os.WriteFile(filepath.Join(plugins, p), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conflist := `{"cniVersion": "1.0.0", "name": "pods", "plugins": [{"type": "bridge", "ipam": {"type": "host-local"}}]}`
	tests := []struct {
		name          string
		files         map[string]string // under the conf dir
		writeDefault  bool
		wantConf      Status
		wantConfText  string
		wantPlugins   Status
		wantPluginTxt string
	}{
		{"network with ipam", map[string]string{"10-pods.conflist": conflist}, false, OK, `network "pods" from`, OK, "host-local"},
		{"first file wins", map[string]string{"10-pods.conflist": conflist, "20-other.conflist": strings.Replace(conflist, "bridge", "ptp", 1)}, false, OK, `10-pods.conflist`, OK, "bridge"},
		{"broken file skipped", map[string]string{"05-bad.conflist": "{", "10-pods.conflist": conflist}, false, OK, "skipped:", OK, "bridge"},
		{"missing plugin", map[string]string{"10-pods.conflist": strings.Replace(conflist, "bridge", "macvlan", 1)}, false, OK, "pods", Missing, "macvlan"},
		{"none, written at start", nil, true, OK, "writes its default", Missing, "portmap"},
		{"none", nil, false, Missing, "no network config", Missing, "unknown"},
		{"only broken", map[string]string{"10-bad.conflist": "{"}, true, Missing, "no usable network config", Missing, "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf := t.TempDir()
			for name, c := range tt.files {
				if err := os.WriteFile(filepath.Join(conf, name), []byte(c), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			o := Options{CNIConfDir: conf, CNIBinDirs: []string{filepath.Join(conf, "nosuch"), plugins}, CNIWriteDefault: tt.writeDefault}
			fs := cni(&o)
			if fs[0].Status != tt.wantConf || !strings.Contains(fs[0].Detail, tt.wantConfText) {
				t.Errorf("config finding %+v, want %v and %q", fs[0], tt.wantConf, tt.wantConfText)
			}
			if fs[1].Status != tt.wantPlugins || !strings.Contains(fs[1].Detail, tt.wantPluginTxt) {
				t.Errorf("plugins finding %+v, want %v and %q", fs[1], tt.wantPlugins, tt.wantPluginTxt)
			}
			for _, f := range fs {
				if f.Status != OK && f.Fix == "" {
					t.Errorf("no fix: %+v", f)
				}
			}
		})
	}
}

func TestSecurityModules(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		check func(o *Options) Finding
		want  Status
		text  string
	}{
		{"apparmor on", map[string]string{"sys/module/apparmor/parameters/enabled": "Y\n"}, appArmor, OK, "enabled"},
		{"apparmor off", map[string]string{"sys/module/apparmor/parameters/enabled": "N\n"}, appArmor, Warn, "refused"},
		{"apparmor absent", nil, appArmor, Warn, "not enabled"},
		{"selinux absent", nil, seLinux, OK, "not enabled"},
		{"selinux permissive", map[string]string{"sys/fs/selinux/enforce": "0\n"}, seLinux, OK, "permissive"},
		{"selinux enforcing", map[string]string{"sys/fs/selinux/enforce": "1\n"}, seLinux, Warn, "not applied"},
		{"seccomp", map[string]string{"proc/sys/kernel/seccomp/actions_avail": "kill_process errno allow\n"}, seccomp, OK, "errno"},
		{"seccomp before 4.14", map[string]string{"proc/self/status": "Name:\tx\nSeccomp:\t0\n"}, seccomp, OK, "in the kernel"},
		{"no seccomp", map[string]string{"proc/self/status": "Name:\tx\n"}, seccomp, Missing, "not in this kernel"},
		{"overlay", map[string]string{"proc/filesystems": "nodev\ttmpfs\nnodev\toverlay\n"}, overlay, OK, "in the kernel"},
		{"user namespaces off", map[string]string{"proc/sys/user/max_user_namespaces": "0\n"}, idmap, Warn, "user.max_user_namespaces = 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := newNode(t, tt.files).options()
			f := tt.check(&o)
			if f.Status != tt.want || !strings.Contains(f.Detail, tt.text) {
				t.Errorf("%+v, want %v and %q", f, tt.want, tt.text)
			}
			if f.Status != OK && f.Fix == "" {
				t.Errorf("no fix: %+v", f)
			}
		})
	}
}

func TestWrite(t *testing.T) {
	var buf bytes.Buffer
	missing := Write(&buf, []Finding{
		{Area: "pidfd", Status: OK, Detail: "works"},
		{Area: "iptables", Status: Missing, Detail: "not on PATH", Fix: "apt-get install iptables"},
		{Area: "AppArmor", Status: Warn, Detail: "off\nsecond line", Fix: "boot with it"},
	})
	if missing != 1 {
		t.Errorf("missing = %d, want 1", missing)
	}
	out := buf.String()
	for _, want := range []string{"ok       pidfd", "MISSING  iptables", "fix: apt-get install iptables", "\n" + strings.Repeat(" ", 32) + "second line", "1 missing", "1 warnings"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// The default handler when the config names none: crun where it is
// installed and the node lets it run, else runc, with why.
func TestDefaultRuntime(t *testing.T) {
	bin := t.TempDir()
	crun := fakeRuntime(t, bin, "crun", "crun version 1.8.1", "")
	hybrid := map[string]string{"proc/self/mountinfo": hybridMounts, "proc/cgroups": procCgroups}
	withHugetlb := map[string]string{"proc/self/mountinfo": hybridMounts + hugetlbMount, "proc/cgroups": procCgroups}
	tests := []struct {
		name     string
		files    map[string]string
		runtimes map[string]string
		want     string
		why      string
	}{
		{"crun installed", withHugetlb, map[string]string{"runc": "runc", "crun": crun}, "crun", "installed"},
		{"crun missing", withHugetlb, map[string]string{"runc": "runc", "crun": filepath.Join(bin, "nosuch")}, "runc", "not installed"},
		{"no crun handler", withHugetlb, map[string]string{"runc": "runc"}, "runc", "no [runtimes.crun]"},
		{"hugetlb quirk", hybrid, map[string]string{"runc": "runc", "crun": crun}, "runc", "crun refuses this node"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := newNode(t, tt.files).options()
			o.Runtimes = tt.runtimes
			if got, why := DefaultRuntime(o); got != tt.want || !strings.Contains(why, tt.why) {
				t.Errorf("DefaultRuntime = %q (%s), want %q (%s)", got, why, tt.want, tt.why)
			}
		})
	}
}
