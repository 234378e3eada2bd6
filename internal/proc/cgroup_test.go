package proc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/huskrt/husk/internal/testutil"
)

// EmptyCgroup kills what runs in the cgroup and its sub-cgroups, and
// returns once none of it is alive; an empty cgroup returns at once.
func TestEmptyCgroup(t *testing.T) {
	testutil.RequiresRoot(t, "cgroups")
	mount := "/sys/fs/cgroup/pids"
	if _, err := os.Stat(filepath.Join(mount, "cgroup.procs")); err != nil {
		mount = "/sys/fs/cgroup"
	}
	rel := fmt.Sprintf("/husk-proc-test-%d", os.Getpid())
	dir, sub := filepath.Join(mount, rel), filepath.Join(mount, rel, "child")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		testutil.Missing(t, "a cgroup to make: %v", err)
	}
	t.Cleanup(func() { _ = os.Remove(sub); _ = os.Remove(dir) })
	if err := EmptyCgroup(context.Background(), rel, []string{dir, sub}, time.Millisecond); err != nil {
		t.Fatalf("empty cgroup: %v", err)
	}
	var cmds []*exec.Cmd
	for _, d := range []string{dir, sub} {
		cmd := exec.Command("sleep", "600")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	// The test reaps its children as they die, so that they leave.
	for _, cmd := range cmds {
		go func() { _ = cmd.Wait() }()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := EmptyCgroup(ctx, rel, []string{dir, sub}, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range cmds {
		if _, err := StartTime(cmd.Process.Pid); err == nil {
			t.Errorf("pid %d still alive", cmd.Process.Pid)
		}
	}
}
