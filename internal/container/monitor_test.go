package container

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/huskrt/husk/internal/monitor"
)

// One pod whose monitor is slow to start holds up neither another pod's
// monitor start, nor gets two monitors when two of its CreateContainers
// come at once. The monitors are real husk-monitors, started through a
// wrapper that counts the starts and holds back the slow pod's.
func TestMonitorStartPerSandbox(t *testing.T) {
	stateDir := t.TempDir()
	m := &Manager{opts: Options{StateDir: stateDir, MonitorBinary: slowMonitor(t)}}
	if err := os.MkdirAll(filepath.Join(stateDir, "monitors"), 0o700); err != nil {
		t.Fatal(err)
	}
	slow, fast := "aaaaaaaaaaaaaaaa0000", "bbbbbbbbbbbbbbbb0000"
	hold := m.monitorDir(slow) + ".hold"
	if err := os.WriteFile(hold, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	var starters sync.WaitGroup
	t.Cleanup(func() {
		// Even when the test failed, let every start finish before the
		// monitors are shut down, so none is left behind.
		_ = os.Remove(hold)
		starters.Wait()
		cancel()
		for _, id := range []string{slow, fast} {
			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := m.monitorClient(id).Shutdown(sctx); err != nil {
				t.Errorf("shut down the monitor of %s: %v", id, err)
			}
			scancel()
			// A second monitor of one pod (the fault this test looks
			// for) no longer owns the socket: end it by its PID.
			for _, pid := range startedPIDs(t, m.monitorDir(id)) {
				if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.Contains(string(cmdline), stateDir) {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
	})

	// Two CreateContainers of the slow pod: one starts its monitor,
	// which waits at the hold file; the other waits for that one.
	slowDone := make(chan error, 2)
	for range 2 {
		starters.Go(func() {
			_, err := m.monitorFor(ctx, slow)
			slowDone <- err
		})
	}
	waitFor(t, func() bool { return starts(t, m.monitorDir(slow)) > 0 }, "the slow pod's monitor to start")

	fastDone := make(chan error, 1)
	starters.Go(func() {
		_, err := m.monitorFor(ctx, fast)
		fastDone <- err
	})
	select {
	case err := <-fastDone:
		if err != nil {
			t.Fatalf("fast pod's monitor: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the fast pod's monitor start waited for the slow pod's")
	}
	select {
	case err := <-slowDone:
		t.Fatalf("the slow pod's monitor started while held back (%v)", err)
	default:
	}

	if err := os.Remove(hold); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-slowDone; err != nil {
			t.Fatalf("slow pod's monitor: %v", err)
		}
	}
	if n := starts(t, m.monitorDir(slow)); n != 1 {
		t.Errorf("the slow pod's monitor was started %d times, want once", n)
	}
	if n := starts(t, m.monitorDir(fast)); n != 1 {
		t.Errorf("the fast pod's monitor was started %d times, want once", n)
	}
	if err := monitor.For(m.monitorDir(slow)).Ping(ctx); err != nil {
		t.Errorf("the slow pod's monitor does not answer: %v", err)
	}
}

// slowMonitor builds husk-monitor and returns a wrapper that records each
// start (its PID, which the monitor keeps) in <dir>.starts and, while
// <dir>.hold exists, waits before it execs the monitor (started as
// `binary -dir <dir>`).
func slowMonitor(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "husk-monitor")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/huskrt/husk/cmd/husk-monitor").CombinedOutput(); err != nil {
		t.Fatalf("build husk-monitor: %v\n%s", err, out)
	}
	wrapper := filepath.Join(dir, "slow-monitor")
	script := "#!/bin/sh\necho $$ >> \"$2.starts\"\nwhile [ -e \"$2.hold\" ]; do sleep 0.01; done\nexec " + bin + " \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return wrapper
}

// startedPIDs are the monitors started for monitorDir, one per start.
func startedPIDs(t *testing.T, monitorDir string) []int {
	t.Helper()
	b, err := os.ReadFile(monitorDir + ".starts")
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

func starts(t *testing.T, monitorDir string) int { return len(startedPIDs(t, monitorDir)) }

// waitFor polls cond until it holds, for at most 30 seconds.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
