package pausesetup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// InfraOptions is what an infra's setup needs to know of its pod.
type InfraOptions struct {
	// NetnsPath is the pod's pinned network namespace, joined first; empty
	// when the infra keeps its network namespace (the node's, or one it was
	// created with, in the pod's user namespace).
	NetnsPath string
	// Hostname is set when the infra has a UTS namespace of its own.
	Hostname    string
	SetHostname bool
	// Sysctls are the pod's, written in its own namespaces (validated by
	// the sandbox: namespaced, no "..").
	Sysctls map[string]string
	// MountNamespace is a pinned mount namespace whose root is the
	// read-only infra root (see Root), joined instead of pivoting in a
	// mount namespace of the infra's own: copying the node's mounts into a
	// new namespace and detaching them again costs ~30 ms on a node with a
	// thousand mounts. A pod with a user namespace cannot join it (it is
	// the node's user namespace's), and pivots (Rootfs).
	MountNamespace string
	// Rootfs is the infra's root: a read-only mount holding only
	// husk-pause, pivoted into in the infra's own mount namespace when
	// there is no MountNamespace to join.
	Rootfs string
	// LastCap is the node's highest capability number
	// (/proc/sys/kernel/cap_last_cap): every one up to it leaves the
	// bounding set.
	LastCap int
	// NoFile is the RLIMIT_NOFILE, soft and hard.
	NoFile uint64
}

// Infra builds the setup of a pod's infra. husk-pause starts it root, with
// every capability, in new PID (unless the node's), IPC (unless the node's)
// and UTS (unless the node's network) namespaces, a new mount namespace
// unless it joins MountNamespace, and, for a pod with a user namespace, in
// new user and network namespaces. In order it:
//
//  1. joins the pod's network namespace;
//  2. writes the pod's sysctls (net.* and IPC ones, for its own namespaces);
//  3. sets the pod's hostname;
//  4. joins the infras' mount namespace, whose root is the read-only infra
//     root and nothing else (MountNamespace), or, in a mount namespace of
//     its own, pivots into that root and detaches the node's mounts (pivot):
//     either way no path leads back to the node's files, not even through
//     /proc/<infra>/root;
//  5. lowers RLIMIT_NOFILE;
//  6. sets no_new_privs, empties the capability bounding set, then its own
//     effective, permitted and inheritable sets: root without capabilities;
//  7. installs a seccomp filter that allows only what husk-pause does from
//     then on (Filter).
func Infra(o InfraOptions) (*Program, error) {
	if !Supported {
		return nil, errors.New("infra setup: husk-pause has no setup entry point on this architecture")
	}
	if !strings.HasPrefix(o.Rootfs, "/") && o.MountNamespace == "" || o.LastCap <= 0 || o.NoFile == 0 {
		return nil, fmt.Errorf("infra setup: incomplete options %+v", o)
	}
	p := &Program{}
	if o.NetnsPath != "" {
		p.StepSave("open network namespace "+o.NetnsPath, unix.SYS_OPENAT, Int(atFDCWD), p.Str(o.NetnsPath), Int(unix.O_RDONLY|unix.O_CLOEXEC))
		p.StepOnSaved("join network namespace "+o.NetnsPath, unix.SYS_SETNS, Int(unix.CLONE_NEWNET))
		p.StepOnSaved("close network namespace", unix.SYS_CLOSE)
	}
	for _, k := range sortedKeys(o.Sysctls) {
		path, v := SysctlPath(k), o.Sysctls[k]
		p.StepSave("open sysctl "+k, unix.SYS_OPENAT, Int(atFDCWD), p.Str(path), Int(unix.O_WRONLY|unix.O_CLOEXEC))
		p.StepOnSaved("write sysctl "+k, unix.SYS_WRITE, p.Mem([]byte(v)), Int(uint64(len(v))))
		p.StepOnSaved("close sysctl "+k, unix.SYS_CLOSE)
	}
	if o.SetHostname {
		p.Step("set hostname", unix.SYS_SETHOSTNAME, p.Mem([]byte(o.Hostname)), Int(uint64(len(o.Hostname))))
	}
	if o.MountNamespace != "" {
		p.StepSave("open mount namespace "+o.MountNamespace, unix.SYS_OPENAT, Int(atFDCWD), p.Str(o.MountNamespace), Int(unix.O_RDONLY|unix.O_CLOEXEC))
		p.StepOnSaved("join mount namespace "+o.MountNamespace, unix.SYS_SETNS, Int(unix.CLONE_NEWNS))
		p.StepOnSaved("close mount namespace", unix.SYS_CLOSE)
	} else {
		p.pivot(o.Rootfs)
	}
	p.Step("set RLIMIT_NOFILE", unix.SYS_PRLIMIT64, Int(0), Int(unix.RLIMIT_NOFILE), p.Mem(words(o.NoFile, o.NoFile)), Int(0))
	p.Step("set no_new_privs", unix.SYS_PRCTL, Int(unix.PR_SET_NO_NEW_PRIVS), Int(1), Int(0), Int(0), Int(0))
	for c := 0; c <= o.LastCap; c++ {
		p.Step(fmt.Sprintf("drop capability %d from the bounding set", c), unix.SYS_PRCTL, Int(unix.PR_CAPBSET_DROP), Int(uint64(c)), Int(0), Int(0), Int(0))
	}
	// struct __user_cap_header_struct {version, pid 0}; three zero
	// __user_cap_data_struct for the 64 capabilities of version 3.
	hdr := make([]byte, 8)
	binary.LittleEndian.PutUint32(hdr, unix.LINUX_CAPABILITY_VERSION_3)
	p.Step("drop every capability", unix.SYS_CAPSET, p.Mem(hdr), p.Mem(make([]byte, 24)))
	filter := p.Mem(Filter())
	fprog := p.Mem(make([]byte, 16)) // struct sock_fprog {u16 len; *filter}
	binary.LittleEndian.PutUint16(p.data[fprog.v:], uint16(len(Filter())/8))
	p.PointerAt(fprog, 8, filter)
	p.Step("install seccomp filter", unix.SYS_SECCOMP, Int(unix.SECCOMP_SET_MODE_FILTER), Int(0), fprog)
	return p, nil
}

// Root builds the setup of the process that makes the infras' shared
// mount namespace (InfraOptions.MountNamespace): started in a new mount
// namespace, it pivots into the read-only root rootfs and detaches the
// node's mounts; huskd then pins its namespace and ends it.
func Root(rootfs string) (*Program, error) {
	if !Supported {
		return nil, errors.New("infra setup: husk-pause has no setup entry point on this architecture")
	}
	if !strings.HasPrefix(rootfs, "/") {
		return nil, fmt.Errorf("infra root %q: not an absolute path", rootfs)
	}
	p := &Program{}
	p.pivot(rootfs)
	return p, nil
}

// pivot makes every mount a slave of the node's (nothing done here
// propagates back), bind mounts the read-only root onto itself (a mount
// of this namespace: one copied from the node's is locked in a user
// namespace), pivots into it and detaches the old root, so no path leads
// back to the node's files, not even through /proc/<infra>/root.
func (p *Program) pivot(rootfs string) {
	root := p.Str(rootfs)
	p.Step("make mounts slaves", unix.SYS_MOUNT, Int(0), p.Str("/"), Int(0), Int(unix.MS_REC|unix.MS_SLAVE), Int(0))
	p.Step("bind mount root "+rootfs, unix.SYS_MOUNT, root, root, Int(0), Int(unix.MS_BIND), Int(0))
	p.Step("enter root", unix.SYS_CHDIR, root)
	dot := p.Str(".")
	p.Step("pivot_root", unix.SYS_PIVOT_ROOT, dot, dot)
	p.Step("detach old root", unix.SYS_UMOUNT2, dot, Int(unix.MNT_DETACH))
	p.Step("chdir /", unix.SYS_CHDIR, p.Str("/"))
}

// atFDCWD is AT_FDCWD as an unsigned word.
const atFDCWD = ^uint64(99) // -100

// SysctlPath is where sysctl key is under /proc/sys. A name is in one of
// two forms, told apart by its first separator, as the kubelet does: with
// dots, "net.ipv4.conf.eth0/100.forwarding", where a '/' stands for a dot
// inside a component (the interface "eth0.100"), or with slashes,
// "net/ipv4/conf/eth0.100/forwarding", which is the path itself.
func SysctlPath(key string) string {
	if i := strings.IndexAny(key, "./"); i >= 0 && key[i] == '/' {
		return "/proc/sys/" + key
	}
	return "/proc/sys/" + strings.Map(func(r rune) rune {
		switch r {
		case '.':
			return '/'
		case '/':
			return '.'
		}
		return r
	}, key)
}

func words(v ...uint64) []byte {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], x)
	}
	return b
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
