package pausesetup

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// decoded is a step as husk-pause makes it, its pointers resolved
// against a program loaded at address 0.
type decoded struct {
	nr    uint64
	args  [6]uint64
	flags uint64
}

// decode relocates and reads a program as husk-pause's assembly does.
func decode(t *testing.T, b []byte) ([]decoded, []byte) {
	t.Helper()
	w := func(at uint64) uint64 { return binary.LittleEndian.Uint64(b[at:]) }
	if w(0) != Magic || w(8) != uint64(len(b)) {
		t.Fatalf("header: magic %#x size %d of %d", w(0), w(8), len(b))
	}
	n, nrel := w(16), w(24)
	relocs := HeaderSize + n*StepSize
	pointers := map[uint64]bool{}
	for i := uint64(0); i < nrel; i++ {
		off := w(relocs + 8*i)
		if off+8 > uint64(len(b)) {
			t.Fatalf("relocation %d at %d: outside", i, off)
		}
		pointers[off] = true
	}
	var steps []decoded
	for i := uint64(0); i < n; i++ {
		at := HeaderSize + i*StepSize
		s := decoded{nr: w(at), flags: w(at + 56)}
		for j := range s.args {
			s.args[j] = w(at + 8 + uint64(j)*8)
		}
		steps = append(steps, s)
	}
	return steps, b
}

func cstring(b []byte, at uint64) string {
	s := b[at:]
	return string(s[:bytes.IndexByte(s, 0)])
}

func TestInfraProgram(t *testing.T) {
	if !Supported {
		t.Skip("no setup on this architecture")
	}
	p, err := Infra(InfraOptions{NetnsPath: "/run/husk/netns/abc", Hostname: "web-0", SetHostname: true,
		Sysctls: map[string]string{"net.ipv4.conf.eth0/100.forwarding": "1", "kernel.shm_rmid_forced": "1"},
		Rootfs:  "/run/husk/infra-rootfs", LastCap: 40, NoFile: 1024})
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Encode()
	if err != nil {
		t.Fatal(err)
	}
	steps, b := decode(t, b)
	names := p.Names()
	if len(names) != len(steps) {
		t.Fatalf("%d names for %d steps", len(names), len(steps))
	}
	byName := map[string]decoded{}
	var order []string
	for i, s := range steps {
		byName[names[i]] = s
		order = append(order, names[i])
	}
	want := []struct {
		name string
		nr   uint64
		str  string // the string the first pointer argument names
	}{
		{"open network namespace /run/husk/netns/abc", unix.SYS_OPENAT, "/run/husk/netns/abc"},
		{"join network namespace /run/husk/netns/abc", unix.SYS_SETNS, ""},
		{"open sysctl kernel.shm_rmid_forced", unix.SYS_OPENAT, "/proc/sys/kernel/shm_rmid_forced"},
		{"open sysctl net.ipv4.conf.eth0/100.forwarding", unix.SYS_OPENAT, "/proc/sys/net/ipv4/conf/eth0.100/forwarding"},
		{"set hostname", unix.SYS_SETHOSTNAME, ""},
		{"bind mount root /run/husk/infra-rootfs", unix.SYS_MOUNT, "/run/husk/infra-rootfs"},
		{"pivot_root", unix.SYS_PIVOT_ROOT, "."},
		{"drop capability 40 from the bounding set", unix.SYS_PRCTL, ""},
		{"drop every capability", unix.SYS_CAPSET, ""},
		{"install seccomp filter", unix.SYS_SECCOMP, ""},
	}
	for _, w := range want {
		s, ok := byName[w.name]
		if !ok {
			t.Errorf("no step %q in %q", w.name, order)
			continue
		}
		if s.nr != w.nr {
			t.Errorf("%s: syscall %d, want %d", w.name, s.nr, w.nr)
		}
		arg := s.args[0]
		if w.nr == unix.SYS_OPENAT {
			arg = s.args[1]
		}
		if w.str != "" && cstring(b, arg) != w.str {
			t.Errorf("%s: argument %q, want %q", w.name, cstring(b, arg), w.str)
		}
	}
	// Restrictions come last, the filter very last; setns uses the
	// namespace opened just before; the hostname is the pod's.
	if last := order[len(order)-1]; last != "install seccomp filter" {
		t.Errorf("last step %q", last)
	}
	if s := byName["join network namespace /run/husk/netns/abc"]; s.flags != FlagArg0Saved || s.args[1] != unix.CLONE_NEWNET {
		t.Errorf("setns step %+v", s)
	}
	if s := byName["set hostname"]; string(b[s.args[0]:s.args[0]+s.args[1]]) != "web-0" {
		t.Errorf("hostname %q", b[s.args[0]:s.args[0]+s.args[1]])
	}
	// The seccomp step points to a sock_fprog, which points to the filter.
	s := byName["install seccomp filter"]
	fprog := s.args[2]
	n, filterAt := binary.LittleEndian.Uint16(b[fprog:]), binary.LittleEndian.Uint64(b[fprog+8:])
	if !bytes.Equal(b[filterAt:filterAt+uint64(n)*8], Filter()) {
		t.Error("sock_fprog does not point to the filter")
	}
}

// run evaluates the filter for a system call on an architecture.
func run(t *testing.T, filter []byte, arch, nr uint32) uint32 {
	t.Helper()
	data := map[uint32]uint32{0: nr, 4: arch}
	var acc uint32
	for pc := 0; pc < len(filter)/8; pc++ {
		ins := filter[8*pc:]
		code, jt, jf, k := binary.LittleEndian.Uint16(ins), ins[2], ins[3], binary.LittleEndian.Uint32(ins[4:])
		switch code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			acc = data[k]
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K:
			pc += int(map[bool]uint8{true: jt, false: jf}[acc == k])
		case unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K:
			pc += int(map[bool]uint8{true: jt, false: jf}[acc >= k])
		case unix.BPF_RET | unix.BPF_K:
			return k
		default:
			t.Fatalf("instruction %d: code %#x", pc, code)
		}
	}
	t.Fatal("fell off the filter")
	return 0
}

func TestFilter(t *testing.T) {
	if !Supported {
		t.Skip("no setup on this architecture")
	}
	f := Filter()
	eperm := unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	for _, c := range []struct {
		arch, nr uint32
		want     uint32
	}{
		{auditArch, unix.SYS_PAUSE, unix.SECCOMP_RET_ALLOW},
		{auditArch, unix.SYS_WAIT4, unix.SECCOMP_RET_ALLOW},
		{auditArch, unix.SYS_RT_SIGRETURN, unix.SECCOMP_RET_ALLOW},
		{auditArch, unix.SYS_EXIT_GROUP, unix.SECCOMP_RET_ALLOW},
		{auditArch, unix.SYS_EXECVE, eperm},
		{auditArch, unix.SYS_OPENAT, eperm},
		{auditArch, unix.SYS_PTRACE, eperm},
		{auditArch, unix.SYS_MOUNT, eperm},
		{auditArch, abiBit | unix.SYS_PAUSE, unix.SECCOMP_RET_KILL_PROCESS},
		{0x40000003 /* AUDIT_ARCH_I386 */, unix.SYS_PAUSE, unix.SECCOMP_RET_KILL_PROCESS},
	} {
		if got := run(t, f, c.arch, c.nr); got != c.want {
			t.Errorf("arch %#x syscall %#x: %#x, want %#x", c.arch, c.nr, got, c.want)
		}
	}
}

func TestSysctlPath(t *testing.T) {
	for in, want := range map[string]string{
		"net.ipv4.ip_forward":                 "/proc/sys/net/ipv4/ip_forward",
		"net.ipv4.conf.eth0/100.forwarding":   "/proc/sys/net/ipv4/conf/eth0.100/forwarding",
		"net/ipv4/conf/eth0.100/forwarding":   "/proc/sys/net/ipv4/conf/eth0.100/forwarding",
		"kernel.shm_rmid_forced":              "/proc/sys/kernel/shm_rmid_forced",
		"fs.mqueue.msg_max":                   "/proc/sys/fs/mqueue/msg_max",
		"net/ipv4/ip_unprivileged_port_start": "/proc/sys/net/ipv4/ip_unprivileged_port_start",
	} {
		if got := SysctlPath(in); got != want {
			t.Errorf("SysctlPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestReport(t *testing.T) {
	names := []string{"a", "b", "c"}
	report := func(done, errno uint64) []byte {
		b := make([]byte, ReportSize)
		binary.LittleEndian.PutUint64(b, done)
		binary.LittleEndian.PutUint64(b[8:], errno)
		return b
	}
	if err := ParseReport(report(3, 0), names); err != nil {
		t.Errorf("all done: %v", err)
	}
	if err := ParseReport(report(1, uint64(unix.EPERM)), names); err == nil || !strings.Contains(err.Error(), "b: ") || !errors.Is(err, syscall.EPERM) {
		t.Errorf("b failed: %v", err)
	}
	if err := ParseReport(report(2, 0), names); err == nil {
		t.Error("a report of 2 steps of 3 passed")
	}
	if err := ParseReport([]byte{1, 2}, names); !errors.Is(err, ErrIncompleteReport) {
		t.Errorf("short report: %v", err)
	}
}

func TestTooLarge(t *testing.T) {
	p := &Program{}
	p.Step("write", unix.SYS_WRITE, Int(1), p.Mem(make([]byte, MaxSize)), Int(MaxSize))
	if _, err := p.Encode(); err == nil {
		t.Error("a program larger than MaxSize encoded")
	}
}

// An infra joins the shared mount namespace instead of pivoting; the
// helper that makes that namespace pivots.
func TestMountNamespaceChoice(t *testing.T) {
	if !Supported {
		t.Skip("no setup on this architecture")
	}
	joined, err := Infra(InfraOptions{MountNamespace: "/run/husk/infra-ns/mnt", LastCap: 40, NoFile: 1024})
	if err != nil {
		t.Fatal(err)
	}
	root, err := Root("/run/husk/infra-rootfs")
	if err != nil {
		t.Fatal(err)
	}
	has := func(p *Program, name string) bool {
		for _, n := range p.Names() {
			if n == name {
				return true
			}
		}
		return false
	}
	if !has(joined, "join mount namespace /run/husk/infra-ns/mnt") || has(joined, "pivot_root") {
		t.Errorf("infra with a shared mount namespace: %q", joined.Names())
	}
	if !has(root, "pivot_root") || !has(root, "detach old root") || has(root, "install seccomp filter") {
		t.Errorf("root helper: %q", root.Names())
	}
}
