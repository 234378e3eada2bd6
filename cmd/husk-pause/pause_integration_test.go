package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildPause builds the binary the way the Makefile does.
func buildPause(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "husk-pause")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=test1", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

func TestVersionFlag(t *testing.T) {
	bin := buildPause(t)
	out, err := exec.Command(bin, "-v").Output()
	if err != nil || string(out) != "husk-pause test1\n" {
		t.Errorf("-v = %q, %v", out, err)
	}
}

func TestSignalsExitZeroAndWarning(t *testing.T) {
	bin := buildPause(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		var stderr bytes.Buffer
		cmd := exec.Command(bin)
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		if cmd.ProcessState != nil {
			t.Fatalf("exited early: %s", stderr.String())
		}
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		if err != nil || cmd.ProcessState.ExitCode() != 0 {
			t.Errorf("%s: exit %v (%v), want 0", sig, cmd.ProcessState.ExitCode(), err)
		}
		if !strings.Contains(stderr.String(), "should be the first process") {
			t.Errorf("no not-PID-1 warning on stderr: %q", stderr.String())
		}
	}
}

// startInPIDNamespace starts husk-pause as PID 1 of a new PID namespace.
func startInPIDNamespace(t *testing.T, bin string) *exec.Cmd {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(bin)
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	})
	time.Sleep(100 * time.Millisecond)
	if strings.Contains(stderr.String(), "should be the first process") {
		t.Errorf("warned although PID 1: %q", stderr.String())
	}
	return cmd
}

// children lists the PIDs whose parent is pid, with their state.
func children(pid int) map[int]string {
	out := map[int]string{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out[p] = f[0]
		}
	}
	return out
}

func TestReapsOrphanedZombiesAsPID1(t *testing.T) {
	needRoot(t)
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("needs busybox-static")
	}
	bin := buildPause(t)
	cmd := startInPIDNamespace(t, bin)
	pid := cmd.Process.Pid
	// Inside the namespace, 1,000 subshells each leave a background child
	// behind and exit: the children are orphans, reparented to PID 1, and
	// become zombies when they exit.
	script := `i=0; while [ $i -lt 1000 ]; do (/bin/busybox true &); i=$((i+1)); done`
	if out, err := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-p", "--", "/bin/busybox", "sh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("make orphans: %v: %s", err, out)
	}
	time.Sleep(time.Second)
	zombies := 0
	for _, st := range children(pid) {
		if st == "Z" {
			zombies++
		}
	}
	if zombies > 0 {
		t.Errorf("%d zombies left under husk-pause after 1s", zombies)
	}
	if cmd.ProcessState != nil {
		t.Fatal("husk-pause exited")
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("SIGTERM as PID 1: %v", err)
	}
}

func TestStoppedChildDoesNotDisturb(t *testing.T) {
	needRoot(t)
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("needs busybox-static")
	}
	bin := buildPause(t)
	cmd := startInPIDNamespace(t, bin)
	pid := cmd.Process.Pid
	// An orphan that sleeps, so it becomes husk-pause's child.
	if out, err := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-p", "--", "/bin/busybox", "sh", "-c", "(/bin/busybox sleep 30 </dev/null >/dev/null 2>&1 &)").CombinedOutput(); err != nil {
		t.Fatalf("make child: %v: %s", err, out)
	}
	var child int
	for i := 0; i < 50 && child == 0; i++ {
		for p := range children(pid) {
			child = p
		}
		time.Sleep(20 * time.Millisecond)
	}
	if child == 0 {
		t.Fatal("no child under husk-pause")
	}
	for _, sig := range []syscall.Signal{syscall.SIGSTOP, syscall.SIGCONT, syscall.SIGSTOP} {
		if err := syscall.Kill(child, sig); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		if st, ok := children(pid)[child]; !ok || st == "Z" {
			t.Fatalf("child %d gone (%q) after %s", child, st, sig)
		}
	}
	_ = syscall.Kill(child, syscall.SIGKILL)
	time.Sleep(300 * time.Millisecond)
	if st, ok := children(pid)[child]; ok {
		t.Errorf("killed child not reaped: state %s", st)
	}
	if cmd.ProcessState != nil {
		t.Fatal("husk-pause exited")
	}
}

// TestFootprint logs what one infra process costs; the figures are
// compared with catatonit in `make bench`.
func TestFootprint(t *testing.T) {
	bin := buildPause(t)
	cmd := exec.Command(bin)
	cmd.Env = []string{"GOMAXPROCS=1"} // as husk runs it (internal/oci)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	time.Sleep(300 * time.Millisecond)
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "RssAnon:") || strings.HasPrefix(l, "Threads:") {
			t.Log(strings.Join(strings.Fields(l), " "))
		}
	}
}
