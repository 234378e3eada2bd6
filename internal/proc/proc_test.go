package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestStartTime(t *testing.T) {
	a, err := StartTime(os.Getpid())
	if err != nil || a == 0 {
		t.Fatalf("StartTime(self) = %d, %v", a, err)
	}
	if _, err := StartTime(1 << 30); !errors.Is(err, ErrGone) {
		t.Errorf("StartTime of a PID that cannot exist = %v, want ErrGone", err)
	}
	// A child that exited and is not reaped yet is gone, not alive.
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Wait() }()
	waitZombie(t, cmd.Process.Pid)
	if _, err := StartTime(cmd.Process.Pid); !errors.Is(err, ErrGone) {
		t.Errorf("StartTime(zombie) = %v, want ErrGone", err)
	}
}

func TestAlive(t *testing.T) {
	self, err := Self(os.Getpid())
	if err != nil || self.BootID == "" {
		t.Fatalf("Self = %+v, %v", self, err)
	}
	for _, tt := range []struct {
		name string
		id   Identity
		want bool
	}{
		{"self", self, true},
		{"another boot", Identity{PID: self.PID, Start: self.Start, BootID: "00000000-0000-0000-0000-000000000000"}, false},
		{"a later process with the PID", Identity{PID: self.PID, Start: self.Start + 1, BootID: self.BootID}, false},
		{"no start time", Identity{PID: self.PID, BootID: self.BootID}, false},
		{"no such PID", Identity{PID: 1 << 30, Start: 1, BootID: self.BootID}, false},
	} {
		if got := Alive(tt.id); got != tt.want {
			t.Errorf("%s: Alive(%+v) = %v, want %v", tt.name, tt.id, got, tt.want)
		}
	}
}

// The watcher reports each exit; of its own children with the status.
func TestWatcher(t *testing.T) {
	w, err := NewWatcher(slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for _, tt := range []struct {
		name   string
		script string
		kill   bool
		want   Exit
	}{
		{"exit code", "exit 3", false, Exit{Code: 3, Known: true}},
		{"killed", "sleep 60", true, Exit{Code: 128 + 9, Signaled: true, Known: true}},
	} {
		pid := startChild(t, tt.script)
		id, err := Self(pid)
		if err != nil && !tt.kill {
			// It may have exited already: a zombie still has its start.
			start, _, serr := stat(pid)
			id, err = Identity{PID: pid, Start: start, BootID: BootID()}, serr
		}
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		got := make(chan Exit, 1)
		p, err := w.Watch(id, func(e Exit) { got <- e })
		if err != nil {
			t.Fatalf("%s: Watch: %v", tt.name, err)
		}
		if tt.kill {
			if err := p.Signal(unix.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case e := <-got:
			if e != tt.want || p.Exit() != tt.want {
				t.Errorf("%s: exit %+v, want %+v", tt.name, e, tt.want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no exit reported", tt.name)
		}
		if err := p.Signal(unix.SIGKILL); err != nil {
			t.Errorf("%s: signal after exit: %v", tt.name, err)
		}
	}
}

// A process that is not huskd's child exits with an unknown status; one
// whose start time does not match, or of another boot, is not watched.
func TestWatcherNotOurs(t *testing.T) {
	w, err := NewWatcher(slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// The shell prints its background child's PID and exits: the child
	// is reparented away from this process.
	out, err := exec.Command("sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!").Output()
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	id, err := Self(pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []Identity{
		{PID: pid, Start: id.Start + 1, BootID: id.BootID},
		{PID: pid, Start: id.Start, BootID: "another-boot"},
		{PID: pid},
	} {
		if _, err := w.Watch(bad, nil); !errors.Is(err, ErrGone) {
			t.Errorf("Watch(%+v) = %v, want ErrGone", bad, err)
		}
	}
	p, err := w.Watch(id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if e := p.Exit(); e.Known {
		t.Errorf("exit of another's child = %+v, want unknown", e)
	}
}

// startChild forks sh -c script as a direct child that nothing else
// waits for (os/exec would).
func startChild(t *testing.T, script string) int {
	t.Helper()
	pid, err := syscall.ForkExec("/bin/sh", []string{"sh", "-c", script}, &syscall.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = unix.Kill(pid, unix.SIGKILL)
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
	})
	return pid
}

func waitZombie(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if i := bytes.LastIndexByte(b, ')'); i > 0 && bytes.HasPrefix(b[i+1:], []byte(" Z")) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("child did not become a zombie")
		}
	}
}

// TestReapChild: children handed to ReapChild are reaped when they exit
// (no zombie left), and while they run they hold neither a thread nor a
// goroutine each, as exec.Cmd.Wait would.
func TestReapChild(t *testing.T) {
	w, err := NewWatcher(slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	const children = 40
	threadsBefore, goroutinesBefore := threads(t), runtime.NumGoroutine()
	var pids []int
	t.Cleanup(func() {
		for _, pid := range pids {
			killChild(pid)
		}
	})
	for i := 0; i < children; i++ {
		cmd := exec.Command("sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pids = append(pids, cmd.Process.Pid)
		if err := w.ReapChild(cmd.Process.Pid); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Process.Release()
	}
	time.Sleep(100 * time.Millisecond)
	if grown := threads(t) - threadsBefore; grown >= children/2 {
		t.Errorf("threads grew by %d for %d running children", grown, children)
	}
	if grown := runtime.NumGoroutine() - goroutinesBefore; grown >= children/2 {
		t.Errorf("goroutines grew by %d for %d running children", grown, children)
	}
	for _, pid := range pids {
		killChild(pid)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for {
			if _, _, err := stat(pid); err != nil {
				break // reaped: no /proc entry, not even a zombie's
			}
			if time.Now().After(deadline) {
				t.Fatalf("child %d not reaped", pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// killChild kills pid if it is still a child of this test.
func killChild(pid int) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	// ppid is the second field after the command's closing parenthesis.
	if i := bytes.LastIndexByte(b, ')'); i >= 0 {
		if f := strings.Fields(string(b[i+1:])); len(f) > 1 && f[1] == strconv.Itoa(os.Getpid()) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func threads(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Threads in /proc/self/status")
	return 0
}
