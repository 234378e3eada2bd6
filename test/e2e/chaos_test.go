package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// podMonitor is the PID of the monitor of sandbox id.
func (e *env) podMonitor(id string) int {
	e.t.Helper()
	dir := filepath.Join(e.state, "monitors", id[:16])
	for _, pid := range e.monitors() {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if strings.Contains(string(b), dir) {
			return pid
		}
	}
	e.t.Fatalf("no monitor for sandbox %s", id)
	return 0
}

// Chaos: kill -9 of a pod's monitor while its containers run. Their state
// is reported truthfully: one that writes output dies of SIGPIPE (its
// pipe's reader is gone) and is EXITED with that status (it came back to
// huskd, which reaps it); a quiet one stays RUNNING, takes execs, and
// StopContainer stops it. The pod takes a new container (a new monitor),
// and RemovePodSandbox leaves nothing. Then the same with the monitor
// killed while huskd is down: the quiet container is still RUNNING after
// the restart, and its exit, which only its new parent saw, is "Unknown".
func TestChaosMonitorKilled(t *testing.T) {
	t.Parallel()
	e := containerEnv(t)
	pod := e.podConfig("monkill")
	podID := e.runPod(pod, "")
	quiet := e.run(podID, pod, ctrConfig("quiet", "sleep", "3600"))
	chatty := e.run(podID, pod, ctrConfig("chatty", "sh", "-c", "while true; do echo tick; sleep 0.1; done"))
	if err := unix.Kill(e.podMonitor(podID), unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if st := e.waitExited(chatty, 10*time.Second); st.ExitCode != 128+int32(unix.SIGPIPE) || st.Reason != "Error" {
		t.Errorf("the chatty container: exit %d reason %q message %q; want %d (SIGPIPE), Error",
			st.ExitCode, st.Reason, st.Message, 128+int32(unix.SIGPIPE))
	}
	if st := e.containerStatus(quiet); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("the quiet container without its monitor: %s", st.State)
	}
	if r := e.exec(quiet, 10, "echo", "alive"); string(r.Stdout) != "alive\n" {
		t.Errorf("exec without the monitor = %q", r.Stdout)
	}
	// Its output is not logged any more: not a container that is gone.
	if _, err := e.rt.ReopenContainerLog(e.ctx(), &runtimeapi.ReopenContainerLogRequest{ContainerId: quiet}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("ReopenContainerLog without the monitor = %v, want FailedPrecondition", err)
	}
	if _, err := e.rt.StopContainer(e.ctx(), &runtimeapi.StopContainerRequest{ContainerId: quiet, Timeout: 1}); err != nil {
		t.Fatalf("StopContainer: %v\n%s", err, e.logs())
	}
	// SIGTERM ends it (it is not its PID namespace's init): 143.
	if st := e.containerStatus(quiet); st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 143 {
		t.Errorf("the quiet container stopped: %s, exit %d reason %q; want EXITED 143", st.State, st.ExitCode, st.Reason)
	}
	// A new container of the pod gets a new monitor.
	late := e.run(podID, pod, ctrConfig("late", "sleep", "3600"))
	if r := e.exec(late, 10, "echo", "late"); string(r.Stdout) != "late\n" {
		t.Errorf("exec in a container made after the monitor died = %q", r.Stdout)
	}
	e.stopRemove(podID)

	// The monitor killed while huskd is down.
	pod = e.podConfig("monkill2")
	podID = e.runPod(pod, "")
	quiet = e.run(podID, pod, ctrConfig("quiet", "sleep", "3600"))
	quietPID := e.containerPID(quiet)
	mon := e.podMonitor(podID)
	e.kill9()
	if err := unix.Kill(mon, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	e.restart()
	// huskd finds the monitor gone and follows the process itself: once it
	// says so, the container must still be running, not taken for exited.
	if !pollUntil(10*time.Second, func() bool { return len(e.logBuf.lines("following its process", quiet)) > 0 }) {
		t.Fatalf("huskd does not follow the quiet container's process after its monitor died:\n%s", e.logs())
	}
	if st := e.containerStatus(quiet); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("after the restart the quiet container is %s (%q)", st.State, st.Message)
	}
	if _, err := e.rt.StopContainer(e.ctx(), &runtimeapi.StopContainerRequest{ContainerId: quiet, Timeout: 0}); err != nil {
		t.Fatalf("StopContainer: %v\n%s", err, e.logs())
	}
	if st := e.containerStatus(quiet); st.ExitCode != 255 || st.Reason != "Unknown" || !strings.Contains(st.Message, "monitor") {
		t.Errorf("stopped after the restart: exit %d reason %q message %q; want 255 Unknown, why", st.ExitCode, st.Reason, st.Message)
	}
	// Its parent is now this test process (the subreaper above the dead
	// huskd and monitor), which reaps it as a node's init would: the pod's
	// infra, the init of its PID namespace, cannot end before.
	var ws unix.WaitStatus
	if pid, err := unix.Wait4(quietPID, &ws, 0, nil); pid != quietPID || err != nil {
		t.Errorf("reap the stopped container %d: %d, %v", quietPID, pid, err)
	}
	e.stopRemove(podID)
	e.assertNoLeaks(podID)
}

// huskdFails runs huskd on this env's dirs and returns what it printed
// when it exits; it fails the test if huskd keeps running.
func (e *env) huskdFails() string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(binDir, "huskd"), "--config", e.configPath, "--root", e.root,
		"--state", e.state, "--listen", e.socket).CombinedOutput()
	if ctx.Err() != nil || err == nil {
		e.t.Fatalf("huskd did not refuse to start (%v):\n%s", err, out)
	}
	return string(out)
}

// Chaos: a damaged husk.db. huskd refuses to start, with a message that
// names the file and says what to do, and no stack trace; the pods run
// on untouched. With the good copy back, everything is there.
func TestChaosDamagedStore(t *testing.T) {
	t.Parallel()
	e := containerEnv(t)
	pod := e.podConfig("dbdamage")
	podID := e.runPod(pod, "")
	ctr := e.run(podID, pod, ctrConfig("sleeper", "sleep", "3600"))
	_, info := e.status(podID)
	ctrPID := e.containerPID(ctr)
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(e.root, "husk.db")
	good, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	page := os.Getpagesize()
	damages := map[string]func() error{
		"truncated": func() error { return os.Truncate(db, int64(3*page)) },
		"overwritten": func() error {
			f, err := os.OpenFile(db, os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt([]byte(strings.Repeat("\xa5\x17\xff\x03", page)), int64(2*page))
			return err
		},
	}
	for name, damage := range damages {
		if err := os.WriteFile(db, good, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := damage(); err != nil {
			t.Fatal(err)
		}
		out := e.huskdFails()
		for _, want := range []string{"store " + db + " is damaged", "mv " + db} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: huskd's message lacks %q:\n%s", name, want, out)
			}
		}
		if strings.Contains(out, "goroutine ") {
			t.Errorf("%s: huskd crashed instead of saying what is wrong:\n%s", name, out)
		}
		if !alive(info.PID) || !alive(ctrPID) {
			t.Errorf("%s: a huskd that refused to start hurt the pod (infra alive %v, container alive %v)", name, alive(info.PID), alive(ctrPID))
		}
	}
	if err := os.WriteFile(db, good, 0o600); err != nil {
		t.Fatal(err)
	}
	e.start()
	if st, _ := e.status(podID); st.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Errorf("pod with the good store back: %s", st.State)
	}
	if r := e.exec(ctr, 10, "echo", "back"); string(r.Stdout) != "back\n" {
		t.Errorf("exec with the good store back = %q", r.Stdout)
	}
	e.stopRemove(podID)
	e.assertNoLeaks(podID)
}

// restart starts huskd again after a kill and waits until it answers: the
// harness's probe may connect to the killed huskd's socket, which its
// children between fork and exec hold open a moment longer.
func (e *env) restart() {
	e.t.Helper()
	e.start()
	var err error
	if !pollUntil(30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err = e.rt.Version(ctx, &runtimeapi.VersionRequest{})
		return err == nil
	}) {
		e.t.Fatalf("huskd does not answer after a restart: %v\n%s", err, e.logs())
	}
}

// huskdPID is the running huskd's PID; 0 when none runs.
func (e *env) huskdPID() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.daemon == nil {
		return 0
	}
	return e.daemon.Process.Pid
}
