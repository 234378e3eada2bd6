package nodecheck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

func kernelRelease() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// overlay: container root filesystems are overlay mounts of image layers.
func overlay(o *Options) Finding {
	f := Finding{Area: "overlayfs", Status: OK, Detail: "in the kernel"}
	b, _ := os.ReadFile(o.proc("filesystems"))
	for _, l := range strings.Split(string(b), "\n") {
		if fs := strings.Fields(l); len(fs) > 0 && fs[len(fs)-1] == "overlay" {
			return f
		}
	}
	mods, _ := filepath.Glob(filepath.Join("/lib/modules", kernelRelease(), "kernel/fs/overlayfs/overlay.ko*"))
	if len(mods) > 0 {
		f.Detail = "a module, not loaded yet (the kernel loads it on the first mount)"
		f.Fix = ""
		return f
	}
	f.Status = Missing
	f.Detail = "not in this kernel, nor as a module"
	f.Fix = "a kernel with CONFIG_OVERLAY_FS: container root filesystems are overlay mounts"
	return f
}

// idmap: pods with their own user namespace get idmapped views of the image
// layers and volumes (internal/container/views.go). The probe maps a clone
// of the root dir's mount into a user namespace held by a husk-pause; the
// clone is never attached, so nothing appears on the node.
func idmap(o *Options) Finding {
	f := Finding{Area: "idmapped mounts", Status: Warn}
	f.Fix = "pods with user namespaces (hostUsers: false) fail here; they need Linux 5.12+ with idmapped mount support in the filesystem of " + o.Root
	if b, err := os.ReadFile(o.proc("sys/user/max_user_namespaces")); err == nil && strings.TrimSpace(string(b)) == "0" {
		f.Detail = "user namespaces are off (user.max_user_namespaces = 0)"
		f.Fix = "sysctl -w user.max_user_namespaces=15000 for pods with user namespaces"
		return f
	}
	switch {
	case !o.IsRoot:
		f.Detail, f.Fix = "not probed: run huskd check as root", "run huskd check as root"
		return f
	case o.Pause == "":
		f.Detail, f.Fix = "not probed: husk-pause is missing", "install husk-pause, then check again"
		return f
	}
	dir := existingParent(o.Root)
	if err := probeIDMap(o.Pause, dir); err != nil {
		f.Detail = fmt.Sprintf("not on the filesystem of %s (Linux %s): %v", dir, kernelRelease(), err)
		return f
	}
	return Finding{Area: "idmapped mounts", Status: OK, Detail: fmt.Sprintf("on the filesystem of %s (for pods with user namespaces)", dir)}
}

func existingParent(p string) string {
	for {
		if _, err := os.Stat(p); err == nil || p == "/" || p == "." {
			return p
		}
		p = filepath.Dir(p)
	}
}

func probeIDMap(pause, dir string) error {
	cmd := exec.Command(pause)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  unix.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 1 << 20, Size: 65536}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 1 << 20, Size: 65536}},
		Pdeathsig:   unix.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("user namespace: %w", err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid))
	if err != nil {
		return fmt.Errorf("user namespace: %w", err)
	}
	defer ns.Close()
	tree, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("open_tree: %w", err)
	}
	defer unix.Close(tree)
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(ns.Fd())}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, attr); err != nil {
		return fmt.Errorf("mount_setattr MOUNT_ATTR_IDMAP: %w", err)
	}
	return nil
}

// pidfd: huskd watches every infra process through a pidfd.
func pidfd() Finding {
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return Finding{Area: "pidfd", Status: Missing, Detail: fmt.Sprintf("pidfd_open: %v (Linux %s)", err, kernelRelease()),
			Fix: "Linux 5.3 or later: huskd follows infra processes through pidfds"}
	}
	unix.Close(fd)
	return Finding{Area: "pidfd", Status: OK, Detail: "pidfd_open works (Linux " + kernelRelease() + ")"}
}

// iptables: the bridge plugin's masquerade and portmap's host ports.
func iptables(ctx context.Context) Finding {
	bin, err := exec.LookPath("iptables")
	if err != nil {
		return Finding{Area: "iptables", Status: Missing, Detail: "not on PATH",
			Fix: "apt-get install iptables: the CNI bridge (ipMasq) and portmap plugins run it"}
	}
	v, err := firstLine(ctx, bin, "-V")
	if err != nil {
		return Finding{Area: "iptables", Status: Missing, Detail: fmt.Sprintf("%s -V: %v", bin, err), Fix: "reinstall iptables: it does not run"}
	}
	return Finding{Area: "iptables", Status: OK, Detail: v}
}

func appArmor(o *Options) Finding {
	b, err := os.ReadFile(o.sys("module/apparmor/parameters/enabled"))
	if err == nil && bytes.HasPrefix(b, []byte("Y")) {
		return Finding{Area: "AppArmor", Status: OK, Detail: "enabled: Localhost profiles are applied by name"}
	}
	return Finding{Area: "AppArmor", Status: Warn,
		Detail: "not enabled: pods asking for a Localhost AppArmor profile are refused (RuntimeDefault and Unconfined run)",
		Fix:    "boot with apparmor=1 security=apparmor if pods need AppArmor profiles"}
}

func seLinux(o *Options) Finding {
	b, err := os.ReadFile(o.sys("fs/selinux/enforce"))
	if err != nil {
		return Finding{Area: "SELinux", Status: OK, Detail: "not enabled (husk does not label containers)"}
	}
	if strings.TrimSpace(string(b)) != "1" {
		return Finding{Area: "SELinux", Status: OK, Detail: "permissive (husk does not label containers)"}
	}
	return Finding{Area: "SELinux", Status: Warn,
		Detail: "enforcing, and husk does not label containers: pods' selinux_options are not applied",
		Fix:    "run SELinux permissive on this node, or use a runtime that labels (CRI-O) where labels matter"}
}

// seccomp: RuntimeDefault and Localhost profiles are seccomp filters.
func seccomp(o *Options) Finding {
	b, err := os.ReadFile(o.proc("sys/kernel/seccomp/actions_avail"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && hasSeccompField(o) {
			return Finding{Area: "seccomp", Status: OK, Detail: "in the kernel (no actions_avail: Linux before 4.14)"}
		}
		return Finding{Area: "seccomp", Status: Missing, Detail: "not in this kernel",
			Fix: "a kernel with CONFIG_SECCOMP_FILTER: pods with a RuntimeDefault or Localhost profile fail without it"}
	}
	return Finding{Area: "seccomp", Status: OK, Detail: "filters, actions: " + strings.TrimSpace(string(b))}
}

func hasSeccompField(o *Options) bool {
	b, _ := os.ReadFile(o.proc("self/status"))
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == "Seccomp" {
			_, err := strconv.Atoi(strings.TrimSpace(v))
			return err == nil
		}
	}
	return false
}
