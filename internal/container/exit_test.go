package container

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/huskrt/husk/internal/image"
	"github.com/huskrt/husk/internal/lifecycle"
	"github.com/huskrt/husk/internal/ociruntime"
	"github.com/huskrt/husk/internal/proc"
	"github.com/huskrt/husk/internal/store"
)

// nothing has no image and no sandbox.
type nothing struct{}

func (nothing) Resolve(string) (*image.Image, error) { return nil, os.ErrNotExist }
func (nothing) LayerDirs(*image.Image) []string      { return nil }
func (nothing) HoldLayers(string, []string) error    { return nil }
func (nothing) ReleaseLayers(string)                 {}
func (nothing) Sandbox(string) (SandboxInfo, error)  { return SandboxInfo{}, os.ErrNotExist }

// testManager is a Manager over a store in a temporary dir, with no
// monitor and a runtime that knows no container (as runc after a reboot:
// delete --force succeeds, anything else does not exist).
func testManager(t *testing.T) *Manager {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "runtime")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n[ \"$3\" = delete ] && exit 0\necho 'level=error msg=\"container does not exist\"' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	rt, err := ociruntime.New("fake", bin, filepath.Join(dir, "rt"), false)
	if err != nil {
		t.Fatal(err)
	}
	runtimes, err := ociruntime.NewHandlers("fake", rt)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "husk.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	m, err := New(Options{RootDir: filepath.Join(dir, "root"), StateDir: filepath.Join(dir, "state"), Store: st,
		Images: nothing{}, Sandboxes: nothing{}, Runtimes: runtimes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// recovered indexes rec as recovery does and reconciles it.
func recovered(t *testing.T, m *Manager, rec Record) *Container {
	t.Helper()
	if err := m.records.Create(rec.ID, rec.Name, &rec, &lifecycle.Snapshot[Record]{}); err != nil {
		t.Fatal(err)
	}
	c := m.load(rec)
	m.reconcile(context.Background(), c)
	return c
}

// waitRecorded waits for the container's exit to be recorded and the
// container deleted from its runtime.
func waitRecorded(t *testing.T, c *Container, within time.Duration) *Record {
	t.Helper()
	for deadline := time.Now().Add(within); ; time.Sleep(10 * time.Millisecond) {
		if v := c.view(); v.State == StateExited && !v.RuntimeCreated {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s still %s (runtime state kept: %v) after %s", c.view().ID, c.view().State, c.view().RuntimeCreated, within)
		}
	}
}

// Issue 11, item 4: a container whose monitor and exit file are gone is
// never RUNNING forever. Its init is told from a later process with its
// PID by its start time, and from a process of another boot by the boot
// ID: such a container is EXITED, 255, "Unknown", with a message.
func TestRecoveredContainerWithoutMonitor(t *testing.T) {
	self, err := proc.Self(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		rec     Record
		message string
	}{
		// This test's own PID stands for a PID reused by a live process.
		{"PID reused", Record{PID: self.PID, PIDStart: self.Start + 1, BootID: self.BootID}, "ended unrecorded"},
		{"another boot", Record{PID: self.PID, PIDStart: self.Start, BootID: "another-boot"}, "rebooted"},
		{"gone", Record{PID: 1 << 30, PIDStart: 1, BootID: self.BootID}, "ended unrecorded"},
		{"recorded before start times were", Record{PID: self.PID, BootID: self.BootID}, "ended unrecorded"},
	}
	for i, tt := range tests {
		m := testManager(t)
		rec := tt.rec
		rec.ID, rec.Name, rec.SandboxID, rec.Handler = "c"+string(rune('a'+i)), "n", "sb", "fake"
		rec.State, rec.StartedAt, rec.RuntimeCreated = StateRunning, 1, true
		c := recovered(t, m, rec)
		v := waitRecorded(t, c, 10*time.Second)
		if v.State != StateExited || v.ExitCode != 255 || v.Reason != "Unknown" || !strings.Contains(v.Message, tt.message) {
			t.Errorf("%s: %s %d %q %q; want EXITED 255 Unknown, a message about %q", tt.name, v.State, v.ExitCode, v.Reason, v.Message, tt.message)
		}
	}
}

// A container whose monitor is gone while its init runs stays RUNNING, is
// followed through a pidfd, and gets its real exit code when huskd is the
// init's parent (the monitor huskd started was killed: the init came back
// to huskd, a child subreaper).
func TestContainerFollowedWithoutMonitor(t *testing.T) {
	m := testManager(t)
	pid, err := syscall.ForkExec("/bin/sh", []string{"sh", "-c", "sleep 60"}, &syscall.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = unix.Kill(pid, unix.SIGKILL)
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
	})
	id, err := proc.Self(pid)
	if err != nil {
		t.Fatal(err)
	}
	c := recovered(t, m, Record{ID: "cf", Name: "n", SandboxID: "sb", Handler: "fake", State: StateRunning, StartedAt: 1,
		PID: id.PID, PIDStart: id.Start, BootID: id.BootID, RuntimeCreated: true})
	// It is followed (a pidfd of it is held), not given up on.
	for deadline := time.Now().Add(10 * time.Second); !holdsPidfd(pid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no pidfd of %d held after 10s: the container is not followed", pid)
		}
	}
	if v := c.view(); v.State != StateRunning {
		t.Fatalf("a running container without its monitor is %s", v.State)
	}
	// The runtime does not know it (no state): stop signals it through
	// its pidfd.
	if err := m.Stop(context.Background(), "cf", 0); err != nil {
		t.Fatal(err)
	}
	v := waitRecorded(t, c, 10*time.Second)
	if v.State != StateExited || v.ExitCode != 137 || v.Reason != "Error" {
		t.Errorf("killed: %s %d %q %q; want EXITED 137 Error", v.State, v.ExitCode, v.Reason, v.Message)
	}
}

// holdsPidfd reports whether this process holds a pidfd of pid.
func holdsPidfd(pid int) bool {
	infos, _ := filepath.Glob("/proc/self/fdinfo/*")
	want := fmt.Sprintf("\nPid:\t%d\n", pid)
	for _, f := range infos {
		if b, _ := os.ReadFile(f); strings.Contains(string(b), want) {
			return true
		}
	}
	return false
}
