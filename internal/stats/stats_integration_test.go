package stats

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"golang.org/x/sys/unix"

	"github.com/huskrt/husk/internal/testutil"
)

func randomSuffix(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// testCgroupDirs creates the cgroup name in every hierarchy ReadCgroup reads
// and removes them when the test ends.
func testCgroupDirs(t *testing.T, name string) []string {
	t.Helper()
	var dirs []string
	switch cgroups.Mode() {
	case cgroups.Unified:
		dirs = []string{filepath.Join(Host().Root, name)}
	case cgroups.Legacy, cgroups.Hybrid:
		seen := map[string]bool{}
		for _, c := range []string{"memory", "cpuacct", "pids", "cpu", "blkio"} {
			// cpuacct is often a symlink to a co-mounted cpu,cpuacct.
			root, err := filepath.EvalSymlinks(filepath.Join(Host().Root, c))
			if err != nil {
				t.Fatalf("controller %s: %v", c, err)
			}
			if !seen[root] {
				seen[root] = true
				dirs = append(dirs, filepath.Join(root, name))
			}
		}
		// runc also places its containers in the unified hierarchy of a
		// hybrid layout, where their pressure is.
		if cgroups.Mode() == cgroups.Hybrid {
			dirs = append(dirs, filepath.Join(Host().Unified, name))
		}
	default:
		testutil.Missing(t, "needs a mounted cgroup hierarchy")
	}
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			// A reaped task can linger in the cgroup for a moment.
			var err error
			for range 50 {
				if err = os.Remove(d); err == nil || errors.Is(err, os.ErrNotExist) {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			t.Errorf("remove %s: %v", d, err)
		})
	}
	return dirs
}

func TestReadCgroupIntegration(t *testing.T) {
	testutil.RequiresRoot(t, "cgroups")
	name := "husk-stats-test-" + randomSuffix(t)
	dirs := testCgroupDirs(t, name)

	// The child waits on stdin until it is in the cgroup, then execs so its
	// memory is charged there; every step is one process, so killing its
	// PID empties the cgroup.
	cmd := exec.Command("/bin/sh", "-c",
		`read _; exec /bin/sh -c 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; exec sleep 5'`)
	gate, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for _, d := range dirs {
		f, err := os.OpenFile(filepath.Join(d, "cgroup.procs"), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.WriteString(strconv.Itoa(cmd.Process.Pid))
		f.Close()
		if err != nil {
			t.Fatalf("move %d into %s: %v", cmd.Process.Pid, d, err)
		}
	}
	gate.Close()

	// Poll until the child has run and been charged for it.
	var c *Cgroup
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err = Host().Read("/"+name, Full)
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		// User and system time come in clock ticks (10 ms): wait for the
		// busy loop to use a few.
		if c.Pids.Current >= 1 && c.Memory.Usage > 0 && c.CPU.UserNanos+c.CPU.SystemNanos > 0 || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("%s", dump(c))
	if c.Pids.Current < 1 {
		t.Errorf("Pids = %d, want >= 1", c.Pids.Current)
	}
	if c.Memory.Usage == 0 || c.CPU.UsageNanos == 0 {
		t.Errorf("memory usage %d, CPU usage %d: want both > 0", c.Memory.Usage, c.CPU.UsageNanos)
	}
	if c.CPU.UserNanos+c.CPU.SystemNanos == 0 {
		t.Error("no user or system CPU time")
	}
	if c.Memory.WorkingSet > c.Memory.Usage {
		t.Errorf("working set %d > usage %d", c.Memory.WorkingSet, c.Memory.Usage)
	}
	if c.Memory.Limit != 0 || c.Memory.Available() != 0 {
		t.Errorf("limit %d, available %d with no limit, want 0", c.Memory.Limit, c.Memory.Available())
	}
	if c.Timestamp.IsZero() {
		t.Error("Timestamp is zero")
	}
	// Pressure where the kernel offers it: v2, or the unified hierarchy of
	// a hybrid layout; this test put the process there.
	if _, err := os.Stat("/proc/pressure/cpu"); err == nil && cgroups.Mode() != cgroups.Legacy {
		if c.CPU.PSI == nil || c.Memory.PSI == nil || c.IO.PSI == nil {
			t.Errorf("pressure: cpu %v memory %v io %v, want all", c.CPU.PSI, c.Memory.PSI, c.IO.PSI)
		}
	}
	if swapAccounting() && c.Swap == nil {
		t.Error("Swap is nil on a kernel that accounts swap")
	}

	// With a limit, available is limit minus working set.
	const limit = 256 << 20
	limitFile := "memory.limit_in_bytes"
	if cgroups.Mode() == cgroups.Unified {
		limitFile = "memory.max"
	}
	if err := os.WriteFile(filepath.Join(dirs[0], limitFile), []byte(strconv.Itoa(limit)), 0); err != nil {
		t.Fatal(err)
	}
	c, err = ReadCgroup("/" + name)
	if err != nil {
		t.Fatalf("ReadCgroup: %v", err)
	}
	if c.Memory.Limit != limit || c.Memory.Available() == 0 || c.Memory.Available()+c.Memory.WorkingSet != limit {
		t.Errorf("limit %d, available %d with working set %d, want %d in total", c.Memory.Limit, c.Memory.Available(), c.Memory.WorkingSet, limit)
	}

	// The files kept open do not keep the cgroup from being removed; the
	// next read says it is gone and closes them.
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	for _, d := range dirs {
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if err := os.Remove(d); err == nil || time.Now().After(deadline) {
				if err != nil {
					t.Fatalf("remove %s with its files open: %v", d, err)
				}
				break
			}
		}
	}
	if _, err := ReadCgroup("/" + name); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after removal: %v, want os.ErrNotExist", err)
	}
	if Host().files.groups["/"+name] != nil {
		t.Error("the files of a removed cgroup are still kept")
	}
}

// swapAccounting reports whether the memory controller accounts swap.
func swapAccounting() bool {
	for _, f := range []string{"/sys/fs/cgroup/memory/memory.memsw.usage_in_bytes", "/sys/fs/cgroup/init.scope/memory.swap.current"} {
		if _, err := os.Stat(f); err == nil {
			return true
		}
	}
	return false
}

func ipCommand(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/sbin/ip", "/sbin/ip"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return testutil.RequiresCommand(t, "ip")
}

// netnsOfAllThreads returns the network namespace of every thread of this
// process.
func netnsOfAllThreads(t *testing.T) map[string]string {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, task := range tasks {
		ns, err := os.Readlink(filepath.Join("/proc/self/task", task.Name(), "ns/net"))
		if err != nil {
			continue // thread exited
		}
		out[task.Name()] = ns
	}
	return out
}

func TestReadNetworkIntegration(t *testing.T) {
	testutil.RequiresRoot(t, "network namespaces")
	ip := ipCommand(t)
	// A namespace pinned in the test's own dir, not with `ip netns add`:
	// that leaves /run/netns bind-mounted on the node for good.
	pin := filepath.Join(t.TempDir(), "netns")
	if err := os.WriteFile(pin, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v: %s", name, args, err, out)
		}
	}
	run("unshare", "--net="+pin, "true")
	t.Cleanup(func() {
		if err := unix.Unmount(pin, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount netns pin: %v", err)
		}
	})
	inNS := func(args ...string) { run("nsenter", append([]string{"--net=" + pin, ip}, args...)...) }
	inNS("link", "add", "a0", "type", "veth", "peer", "name", "a1")
	inNS("link", "set", "a0", "up")
	inNS("link", "set", "a1", "up")

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}

	ifs, err := ReadNetwork(pin)
	if err != nil {
		t.Fatalf("ReadNetwork: %v", err)
	}
	t.Logf("%+v", ifs)
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"a0", "a1"}) {
		t.Errorf("interfaces = %v, want [a0 a1]", names)
	}

	// Through a process in the namespace; through one that is not (a
	// reused PID): the pin is read instead, never the other namespace.
	sleeper := exec.Command("nsenter", "--net="+pin, "sleep", "30")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", sleeper.Process.Pid))
		pinNS, _ := os.Readlink("/proc/self/ns/net")
		if ns != "" && ns != pinNS || time.Now().After(deadline) {
			break // nsenter has switched to the pod's namespace
		}
	}
	for _, pid := range []int{sleeper.Process.Pid, sleeper.Process.Pid, os.Getpid()} {
		ifs, err := Host().ReadNetworkOf(pid, pin)
		var got []string
		for _, i := range ifs {
			got = append(got, i.Name)
		}
		slices.Sort(got)
		if err != nil || !slices.Equal(got, []string{"a0", "a1"}) {
			t.Errorf("ReadNetworkOf(%d) = %v, %v; want [a0 a1]", pid, got, err)
		}
		// The sleeper's net/dev is kept open; the other process's is not
		// (read through the pin), and drops it.
		if kept, want := Host().files.size(), map[bool]int{true: 1, false: 0}[pid == sleeper.Process.Pid]; kept != want {
			t.Errorf("after ReadNetworkOf(%d): %d files kept, want %d", pid, kept, want)
		}
	}

	after, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("caller's netns changed: %s -> %s", before, after)
	}

	// Concurrent reads must leave every thread of the process where it was.
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			if _, err := ReadNetwork(pin); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent ReadNetwork: %v", err)
	}
	for tid, n := range netnsOfAllThreads(t) {
		if n != before {
			t.Errorf("thread %s is in netns %s, want %s", tid, n, before)
		}
	}

	// A file that is not a network namespace must fail without moving anyone.
	if _, err := ReadNetwork("/proc/self/ns/uts"); err == nil {
		t.Error("ReadNetwork on a UTS namespace: want error")
	}
	if _, err := ReadNetwork("/proc/self/status"); err == nil {
		t.Error("ReadNetwork on a regular file: want error")
	}
	for tid, n := range netnsOfAllThreads(t) {
		if n != before {
			t.Errorf("thread %s is in netns %s after failed reads, want %s", tid, n, before)
		}
	}
}
