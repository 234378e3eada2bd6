package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/huskrt/husk/internal/pausesetup"
	"github.com/huskrt/husk/internal/testutil"
)

// entryLdflag is the Makefile's -E main.entry where husk-pause has its
// assembly entry point.
func entryLdflag() string {
	if runtime.GOARCH == "amd64" {
		return " -E main.entry"
	}
	return ""
}

// buildPauseGo builds the portable fallback: main, with the Go runtime.
func buildPauseGo(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "husk-pause-go")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=test1", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// The portable main keeps pause.c's behaviour and refuses -infra, which
// it cannot do, with a message and its own exit code.
func TestGoFallback(t *testing.T) {
	bin := buildPauseGo(t)
	if out, err := exec.Command(bin, "-v").Output(); err != nil || string(out) != "husk-pause test1\n" {
		t.Errorf("-v = %q, %v", out, err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "-infra")
	cmd.Stderr = &stderr
	err := cmd.Run()
	if cmd.ProcessState.ExitCode() != pausesetup.ExitBadProgram || !strings.Contains(stderr.String(), "assembly entry point") {
		t.Errorf("-infra: exit %d (%v), stderr %q", cmd.ProcessState.ExitCode(), err, stderr.String())
	}
	cmd = exec.Command(bin)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the handlers be installed
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("SIGTERM: %v", err)
	}
}

// roRootfs makes a read-only bind mount holding only the binary, as huskd
// prepares the infra's root.
func roRootfs(t *testing.T, bin string) string {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	// Traversable, as a node's /run is: the root of a user namespace is
	// another user of the node.
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "husk-pause"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(root, root, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(root, unix.MNT_DETACH) })
	if err := unix.Mount("", root, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		t.Fatal(err)
	}
	return root
}

// pinnedNetns makes a network namespace pinned at a file.
func pinnedNetns(t *testing.T) string {
	t.Helper()
	pin := filepath.Join(t.TempDir(), "netns")
	if err := os.WriteFile(pin, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("unshare", "--net="+pin, "true").CombinedOutput(); err != nil {
		t.Fatalf("unshare --net: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = unix.Unmount(pin, unix.MNT_DETACH) })
	return pin
}

// infra is husk-pause started as the monitor starts it, with its setup
// channel.
type infra struct {
	cmd    *exec.Cmd
	setup  *os.File
	stderr *os.File
}

func startInfra(t *testing.T, bin string, attr *syscall.SysProcAttr) *infra {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "setup"), os.NewFile(uintptr(fds[1]), "setup-child")
	in := &infra{cmd: exec.Command(bin, "-infra"), setup: ours, stderr: stderrFile(t)}
	in.cmd.ExtraFiles = []*os.File{theirs}
	in.cmd.Stderr = in.stderr
	in.cmd.SysProcAttr = attr
	if err := in.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	theirs.Close()
	t.Cleanup(func() {
		ours.Close()
		_ = in.cmd.Process.Kill()
		_ = in.cmd.Wait()
	})
	return in
}

// run sends the program and returns the report, all of what came back.
func (in *infra) run(t *testing.T, prog []byte) []byte {
	t.Helper()
	if _, err := in.setup.Write(prog); err != nil {
		t.Fatal(err)
	}
	_ = in.setup.SetReadDeadline(time.Now().Add(10 * time.Second))
	var report bytes.Buffer
	if _, err := report.ReadFrom(in.setup); err != nil {
		t.Fatalf("report: %v", err)
	}
	return report.Bytes()
}

func statusOf(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

func lastCap(t *testing.T) int {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// The setup puts husk-pause where a pod's infra belongs and takes its
// privileges: each of the infra's protections is checked from outside,
// with and without a user namespace.
func TestInfraSetup(t *testing.T) {
	testutil.RequiresRoot(t, "namespaces, mounts, setns")
	testutil.RequiresCommand(t, "nsenter")
	testutil.RequiresCommand(t, "unshare")
	if !pausesetup.Supported {
		t.Skip("no setup entry point on " + runtime.GOARCH)
	}
	bin := buildPause(t)
	rootfs := roRootfs(t, bin)
	shared := sharedMountNS(t, rootfs)
	for _, c := range []struct {
		name           string
		userns, shared bool
	}{{"own mount namespace", false, false}, {"shared mount namespace", false, true}, {"user namespace", true, false}} {
		userns := c.userns
		t.Run(c.name, func(t *testing.T) {
			attr := &syscall.SysProcAttr{Setsid: true,
				Cloneflags: unix.CLONE_NEWPID | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS}
			opts := pausesetup.InfraOptions{Hostname: "web-0", SetHostname: true, Rootfs: rootfs, LastCap: lastCap(t), NoFile: 1024,
				Sysctls: map[string]string{"kernel.shm_rmid_forced": "1", "net.ipv4.ip_unprivileged_port_start": "80"}}
			if c.shared {
				opts.MountNamespace = shared
			} else {
				attr.Cloneflags |= unix.CLONE_NEWNS
			}
			var netns string
			checks := []struct{ ns, cmd, want string }{
				{"-u", "hostname", "web-0"},
				{"-i", "cat /proc/sys/kernel/shm_rmid_forced", "1"},
				{"-n", "cat /proc/sys/net/ipv4/ip_unprivileged_port_start", "80"},
			}
			if userns {
				attr.Cloneflags |= unix.CLONE_NEWUSER | unix.CLONE_NEWNET
				attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: 300000, Size: 65536}}
				attr.GidMappings = attr.UidMappings
				attr.GidMappingsEnableSetgroups = true
				// Root of the new user namespace, not the node's root
				// (unmapped there), so that exec keeps its capabilities.
				attr.Credential = &syscall.Credential{Uid: 0, Gid: 0}
			} else {
				netns = pinnedNetns(t)
				opts.NetnsPath = netns
			}
			prog, err := pausesetup.Infra(opts)
			if err != nil {
				t.Fatal(err)
			}
			b, err := prog.Encode()
			if err != nil {
				t.Fatal(err)
			}
			in := startInfra(t, filepath.Join(rootfs, "husk-pause"), attr)
			if err := pausesetup.ParseReport(in.run(t, b), prog.Names()); err != nil {
				t.Fatalf("setup: %v (stderr %q)", err, contents(t, in.stderr))
			}
			pid := in.cmd.Process.Pid
			st := statusOf(t, pid)
			for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
				if st[k] != "0000000000000000" {
					t.Errorf("%s = %s, want none", k, st[k])
				}
			}
			if st["NoNewPrivs"] != "1" || st["Seccomp"] != "2" || st["Threads"] != "1" {
				t.Errorf("NoNewPrivs %s, Seccomp %s, Threads %s; want 1, 2 (filter), 1", st["NoNewPrivs"], st["Seccomp"], st["Threads"])
			}
			if got := installedFilter(t, pid); !bytes.Equal(got, pausesetup.Filter()) {
				t.Errorf("the infra runs under another seccomp filter than pausesetup.Filter (%d bytes, want %d)", len(got), len(pausesetup.Filter()))
			}
			if f := strings.Fields(st["NSpid"]); len(f) != 2 || f[1] != "1" {
				t.Errorf("NSpid %q: not PID 1 of its own PID namespace", st["NSpid"])
			}
			mi, _ := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
			if lines := strings.Split(strings.TrimSpace(string(mi)), "\n"); len(lines) != 1 || strings.Fields(lines[0])[4] != "/" ||
				!strings.HasPrefix(strings.Fields(lines[0])[5], "ro,") {
				t.Errorf("mounts of the infra:\n%s\nwant only a read-only /", mi)
			}
			if c.shared && nsInode(t, fmt.Sprintf("/proc/%d/ns/mnt", pid)) != nsInode(t, shared) {
				t.Error("not in the shared mount namespace")
			}
			if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/root/", pid)); err != nil || len(ents) != 1 || ents[0].Name() != "husk-pause" {
				t.Errorf("root of the infra: %v %v", ents, err)
			}
			if _, err := os.Stat(fmt.Sprintf("/proc/%d/root/../../etc/passwd", pid)); err == nil {
				t.Error("the node's files are reachable through the infra's root")
			}
			if limits, _ := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid)); !strings.Contains(strings.Join(strings.Fields(string(limits)), " "), "Max open files 1024 1024") {
				t.Errorf("limits:\n%s", limits)
			}
			if netns != "" && nsInode(t, fmt.Sprintf("/proc/%d/ns/net", pid)) != nsInode(t, netns) {
				t.Error("not in the pod's network namespace")
			}
			if userns {
				if m, _ := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", pid)); strings.Join(strings.Fields(string(m)), " ") != "0 300000 65536" {
					t.Errorf("uid_map %q", m)
				}
				if s, _ := os.ReadFile(fmt.Sprintf("/proc/%d/setgroups", pid)); strings.TrimSpace(string(s)) != "allow" {
					t.Errorf("setgroups %q: containers joining the user namespace could not set their groups", s)
				}
			}
			for _, c := range checks {
				out, err := exec.Command("nsenter", "-t", strconv.Itoa(pid), c.ns, "--", "sh", "-c", c.cmd).CombinedOutput()
				if got := strings.TrimSpace(string(out)); err != nil || got != c.want {
					t.Errorf("nsenter %s %s = %q (%v), want %q", c.ns, c.cmd, got, err, c.want)
				}
			}
			_ = in.cmd.Process.Signal(syscall.SIGTERM)
			if err := in.cmd.Wait(); err != nil {
				t.Errorf("SIGTERM after setup: %v", err)
			}
		})
	}
}

// installedFilter reads the seccomp filter pid runs under, as the kernel
// holds it (PTRACE_SECCOMP_GET_FILTER on a seized, interrupted process,
// which then goes on as before).
func installedFilter(t *testing.T, pid int) []byte {
	t.Helper()
	runtime.LockOSThread() // ptrace requests come from the tracing thread
	defer runtime.UnlockOSThread()
	if err := unix.PtraceSeize(pid); err != nil {
		t.Fatalf("seize %d: %v", pid, err)
	}
	defer func() {
		if err := unix.PtraceDetach(pid); err != nil {
			t.Errorf("detach %d: %v", pid, err)
		}
	}()
	if err := unix.PtraceInterrupt(pid); err != nil {
		t.Fatalf("interrupt %d: %v", pid, err)
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, unix.WALL, nil); err != nil || !ws.Stopped() {
		t.Fatalf("wait for %d to stop: %v (status %#x)", pid, err, ws)
	}
	n, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(pid), 0, 0, 0, 0)
	if errno != 0 {
		t.Fatalf("filter length of %d: %v", pid, errno)
	}
	b := make([]byte, 8*n) // struct sock_filter
	if _, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(pid), 0,
		uintptr(unsafe.Pointer(&b[0])), 0, 0); errno != 0 {
		t.Fatalf("filter of %d: %v", pid, errno)
	}
	return b
}

// sharedMountNS makes a mount namespace whose root is rootfs, pinned, as
// huskd makes the one its infras share.
func sharedMountNS(t *testing.T, rootfs string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ns")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		t.Fatal(err)
	}
	pin := filepath.Join(dir, "mnt")
	if err := os.WriteFile(pin, nil, 0o400); err != nil {
		t.Fatal(err)
	}
	prog, err := pausesetup.Root(rootfs)
	if err != nil {
		t.Fatal(err)
	}
	b, err := prog.Encode()
	if err != nil {
		t.Fatal(err)
	}
	in := startInfra(t, filepath.Join(rootfs, "husk-pause"), &syscall.SysProcAttr{Setsid: true, Cloneflags: unix.CLONE_NEWNS})
	if err := pausesetup.ParseReport(in.run(t, b), prog.Names()); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(fmt.Sprintf("/proc/%d/ns/mnt", in.cmd.Process.Pid), pin, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(pin, unix.MNT_DETACH) })
	return pin
}

// A step that fails is reported by its index and errno, and the infra
// exits; a program that is not one ends it at once.
func TestInfraSetupFailures(t *testing.T) {
	testutil.RequiresKernel(t, "husk-pause's setup on fd 3")
	if !pausesetup.Supported {
		t.Skip("no setup entry point on " + runtime.GOARCH)
	}
	bin := buildPause(t)
	t.Run("failed step", func(t *testing.T) {
		p := &pausesetup.Program{}
		p.Step("getpid", unix.SYS_GETPID)
		p.Step("chdir to nowhere", unix.SYS_CHDIR, p.Str("/nonexistent/dir"))
		p.Step("never run", unix.SYS_GETPID)
		b, err := p.Encode()
		if err != nil {
			t.Fatal(err)
		}
		in := startInfra(t, bin, nil)
		err = pausesetup.ParseReport(in.run(t, b), p.Names())
		if err == nil || !strings.Contains(err.Error(), "chdir to nowhere") || !strings.Contains(err.Error(), unix.ENOENT.Error()) {
			t.Errorf("report: %v", err)
		}
		_ = in.cmd.Wait()
		if code := in.cmd.ProcessState.ExitCode(); code != pausesetup.ExitStepFailed {
			t.Errorf("exit %d, want %d", code, pausesetup.ExitStepFailed)
		}
	})
	for name, prog := range map[string][]byte{
		"garbage":   bytes.Repeat([]byte{0xab}, 64),
		"too short": {1, 2, 3},
		"too large": func() []byte {
			b := make([]byte, pausesetup.HeaderSize)
			binary.LittleEndian.PutUint64(b, pausesetup.Magic)
			binary.LittleEndian.PutUint64(b[8:], pausesetup.MaxSize+1)
			return b
		}(),
		"relocation outside": func() []byte {
			b := make([]byte, pausesetup.HeaderSize+8)
			binary.LittleEndian.PutUint64(b, pausesetup.Magic)
			binary.LittleEndian.PutUint64(b[8:], uint64(len(b)))
			binary.LittleEndian.PutUint64(b[24:], 1)
			binary.LittleEndian.PutUint64(b[32:], 1<<40)
			return b
		}(),
	} {
		t.Run(name, func(t *testing.T) {
			in := startInfra(t, bin, nil)
			_, _ = in.setup.Write(prog)
			in.setup.Close() // EOF for the short ones
			_ = in.cmd.Wait()
			if code := in.cmd.ProcessState.ExitCode(); code != pausesetup.ExitBadProgram {
				t.Errorf("exit %d, want %d", code, pausesetup.ExitBadProgram)
			}
		})
	}
}
