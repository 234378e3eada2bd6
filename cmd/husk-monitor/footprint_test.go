package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	monclient "github.com/huskrt/husk/internal/monitor"
	"github.com/huskrt/husk/internal/monitor/proto"
)

// fakeRuntime is an OCI runtime's create as the monitor runs it: it starts
// the "container" (a shell that logs, then sleeps, with the stdio the
// monitor gave it), writes its PID file and exits, leaving the container
// to the monitor (a subreaper).
const fakeRuntime = `#!/bin/sh
while [ $# -gt 0 ]; do
	case "$1" in --pid-file) pidfile="$2"; shift;; esac
	shift
done
# Some output, as a container logs, then quiet.
(i=0; while [ $i -lt 3000 ]; do echo "line $i: the quick brown fox jumps over the lazy dog, again and again"; i=$((i+1)); done; exec sleep 600) &
echo $! > "$pidfile"
`

// anonKiB is a process's anonymous memory: what it alone holds, its text
// being shared by the node's monitors (a binary just written counts as
// dirty file pages, so Private_Dirty would count it here).
func anonKiB(t *testing.T, pid int) int {
	t.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) >= 2 && fs[0] == "Anonymous:" {
			n, _ := strconv.Atoi(fs[1])
			return n
		}
	}
	t.Fatal("no Anonymous")
	return 0
}

// The monitor is paid per pod: its private memory, idle and with one
// container whose output it copies, stays under a bound (its text is
// shared between the monitors of a node). The figures are logged;
// `make bench` compares them with containerd's shim.
func TestFootprint(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "husk-monitor")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	runtime := filepath.Join(dir, "runtime")
	if err := os.WriteFile(runtime, []byte(fakeRuntime), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mon, err := monclient.Ensure(ctx, bin, filepath.Join(dir, "mon"), nil)
	if err != nil {
		t.Fatal(err)
	}
	pid := monitorPID(t, filepath.Join(dir, "mon"))
	t.Cleanup(func() { _ = syscall_kill(pid) })
	time.Sleep(200 * time.Millisecond) // let it settle: this reads memory, not state
	idle := anonKiB(t, pid)
	st0, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	for _, l := range strings.Split(string(st0), "\n") {
		if strings.HasPrefix(l, "Threads:") {
			t.Logf("idle %s", l)
		}
	}

	bundle := filepath.Join(dir, "bundle")
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		t.Fatal(err)
	}
	ctrPID, err := mon.Create(ctx, &proto.Create{ID: "c1", Runtime: runtime, RuntimeRoot: dir, Bundle: bundle,
		LogPath: filepath.Join(dir, "c1.log"), ExitFile: filepath.Join(dir, "c1.exit")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall_kill(ctrPID) })
	logged := func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "c1.log"))
		return strings.Count(string(b), "\n") >= 3000
	}
	for deadline := time.Now().Add(20 * time.Second); !logged(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the container's output did not reach its log")
		}
	}
	one := anonKiB(t, pid)
	st, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	threads := ""
	for _, l := range strings.Split(string(st), "\n") {
		if strings.HasPrefix(l, "Threads:") {
			threads = strings.TrimSpace(strings.TrimPrefix(l, "Threads:"))
		}
	}
	t.Logf("monitor anonymous memory: %d KiB idle, %d KiB with one container; %s threads", idle, one, threads)
	const bound = 1024
	if one > bound {
		t.Errorf("monitor with one container: %d KiB private, over %d KiB", one, bound)
	}
}

// monitorPID is the PID of the monitor serving dir.
func monitorPID(t *testing.T, dir string) int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if strings.Contains(string(b), dir+"\x00") && strings.Contains(string(b), "husk-monitor") {
			return pid
		}
	}
	t.Fatalf("no monitor for %s", dir)
	return 0
}

func syscall_kill(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill()
}
