package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/huskrt/husk/internal/testutil"
)

// buildPause builds the binary the way the Makefile does.
func buildPause(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "husk-pause")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=test1"+entryLdflag(), "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// needPIDNamespace gates the tests that run husk-pause as PID 1 of a PID
// namespace and reach into it with nsenter and busybox.
func needPIDNamespace(t *testing.T) string {
	t.Helper()
	testutil.RequiresRoot(t, "PID namespaces")
	testutil.RequiresFile(t, "/bin/busybox", "busybox-static")
	return testutil.RequiresCommand(t, "nsenter")
}

// stderrFile is a file for a child's stderr: what the child wrote is in
// it when the write returns, with no copying goroutine in between.
func stderrFile(t *testing.T) *os.File {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func contents(t *testing.T, f *os.File) string {
	t.Helper()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitFor polls cond until it holds or within passes; it returns whether
// it held.
func waitFor(within time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(within); ; time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
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
		stderr := stderrFile(t)
		cmd := exec.Command(bin)
		cmd.Stderr = stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitReady(t, cmd.Process.Pid)
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		if err != nil || cmd.ProcessState.ExitCode() != 0 {
			t.Errorf("%s: exit %v (%v), want 0", sig, cmd.ProcessState.ExitCode(), err)
		}
		if out := contents(t, stderr); !strings.Contains(out, "should be the first process") {
			t.Errorf("no not-PID-1 warning on stderr: %q", out)
		}
	}
}

// startInPIDNamespace starts husk-pause as PID 1 of a new PID namespace.
func startInPIDNamespace(t *testing.T, bin string) *exec.Cmd {
	t.Helper()
	stderr := stderrFile(t)
	cmd := exec.Command(bin)
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	})
	waitReady(t, cmd.Process.Pid) // the warning comes before, if at all
	if out := contents(t, stderr); strings.Contains(out, "should be the first process") {
		t.Errorf("warned although PID 1: %q", out)
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
	nsenter := needPIDNamespace(t)
	bin := buildPause(t)
	cmd := startInPIDNamespace(t, bin)
	pid := cmd.Process.Pid
	// Inside the namespace, 1,000 subshells each leave a background child
	// behind and exit: the children are orphans, reparented to PID 1, and
	// become zombies when they exit.
	script := `i=0; while [ $i -lt 1000 ]; do (/bin/busybox true &); i=$((i+1)); done`
	if out, err := exec.Command(nsenter, "-t", strconv.Itoa(pid), "-p", "--", "/bin/busybox", "sh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("make orphans: %v: %s", err, out)
	}
	// Every orphan is a true that exits at once: once reaped, none is left.
	if !waitFor(10*time.Second, func() bool { return len(children(pid)) == 0 }) {
		t.Errorf("children left under husk-pause after 10s: %v", children(pid))
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
	nsenter := needPIDNamespace(t)
	bin := buildPause(t)
	cmd := startInPIDNamespace(t, bin)
	pid := cmd.Process.Pid
	orphan := func(script string) {
		t.Helper()
		if out, err := exec.Command(nsenter, "-t", strconv.Itoa(pid), "-p", "--", "/bin/busybox", "sh", "-c", script).CombinedOutput(); err != nil {
			t.Fatalf("make child: %v: %s", err, out)
		}
	}
	// An orphan that sleeps, so it becomes husk-pause's child.
	orphan("(/bin/busybox sleep 30 </dev/null >/dev/null 2>&1 &)")
	var child int
	waitFor(5*time.Second, func() bool {
		for p := range children(pid) {
			child = p
		}
		return child != 0
	})
	if child == 0 {
		t.Fatal("no child under husk-pause")
	}
	for _, step := range []struct {
		sig   syscall.Signal
		state func(string) bool
	}{
		{syscall.SIGSTOP, func(s string) bool { return s == "T" }},
		{syscall.SIGCONT, func(s string) bool { return s == "S" || s == "R" }},
		{syscall.SIGSTOP, func(s string) bool { return s == "T" }},
	} {
		if err := syscall.Kill(child, step.sig); err != nil {
			t.Fatal(err)
		}
		if !waitFor(5*time.Second, func() bool { return step.state(children(pid)[child]) }) {
			t.Fatalf("child %d in state %q after %s", child, children(pid)[child], step.sig)
		}
	}
	// A barrier: husk-pause reaps a second orphan only after it handled
	// the SIGCHLDs the stops and the continue sent it.
	orphan("(/bin/busybox true &)")
	if !waitFor(5*time.Second, func() bool { return len(children(pid)) == 1 }) {
		t.Fatalf("second orphan not reaped: children %v", children(pid))
	}
	if st, ok := children(pid)[child]; !ok || st != "T" {
		t.Fatalf("stopped child %d gone or changed (%q)", child, st)
	}
	_ = syscall.Kill(child, syscall.SIGKILL)
	if !waitFor(5*time.Second, func() bool { _, ok := children(pid)[child]; return !ok }) {
		t.Errorf("killed child not reaped: state %s", children(pid)[child])
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
	waitReady(t, cmd.Process.Pid)
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "RssAnon:") || strings.HasPrefix(l, "Threads:") {
			t.Log(strings.Join(strings.Fields(l), " "))
		}
	}
}
