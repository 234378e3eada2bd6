package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// containerPID is the host PID of a container's init, from its verbose
// status.
func (e *env) containerPID(id string) int {
	e.t.Helper()
	resp, err := e.rt.ContainerStatus(e.ctx(), &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		e.t.Fatalf("ContainerStatus %s: %v", id, err)
	}
	var info struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(resp.Info["info"]), &info); err != nil || info.PID <= 0 {
		e.t.Fatalf("container %s: verbose info %q: %v", id, resp.Info["info"], err)
	}
	return info.PID
}

// podProcesses lists the live processes of this env's pods (in its
// cgroups) and its monitors.
func (e *env) podProcesses() []int {
	pids := e.monitors()
	procs, _ := filepath.Glob("/proc/[0-9]*/cgroup")
	for _, p := range procs {
		if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(e.cgroupParent+"/")) {
			pid := atoi(strings.Split(p, "/")[2])
			if _, st := procCommState(pid); st != "" && st != "Z" {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// simulateReboot does to this env what a reboot does to a node: huskd and
// every process of its pods die, their mounts and network namespaces go,
// the state dir (a tmpfs under /run on a node) comes back empty and the
// pods' cgroups, bridge and iptables rules are gone. The root, with its
// records and its CNI cache, and the CNI IP allocations (on disk) stay.
// The boot ID stays the same: huskd must tell the processes are gone by
// themselves, not by the boot.
func (e *env) simulateReboot(ids ...string) {
	e.t.Helper()
	e.kill9()
	killed := map[int]bool{}
	for i := 0; ; i++ {
		// The pods' processes whose monitor died came to this process, a
		// child subreaper: reap them, as a node's init would (a PID
		// namespace's init does not finish dying before its members are
		// reaped).
		for pid := range killed {
			var ws unix.WaitStatus
			_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		}
		pids := e.podProcesses()
		if len(pids) == 0 {
			break
		}
		if i > 1000 {
			e.t.Fatalf("reboot: processes %v survive SIGKILL", pids)
		}
		for _, pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL)
			killed[pid] = true
		}
		time.Sleep(10 * time.Millisecond)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	lines := strings.Split(string(mi), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if f := strings.Fields(lines[i]); len(f) > 4 && strings.HasPrefix(f[4], e.dir+"/") {
			if err := unix.Unmount(f[4], unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				e.t.Fatalf("reboot: unmount %s: %v", f[4], err)
			}
		}
	}
	if err := os.RemoveAll(e.state); err != nil {
		e.t.Fatalf("reboot: empty the state dir: %v", err)
	}
	removeCgroups(e.cgroupParent)
	_ = exec.Command("ip", "link", "del", e.bridge).Run()
	e.flushRules(ids...)
}

// flushRules deletes the iptables rules of this env's pods (naming one of
// ids or its subnet) and the per-pod chains they jump to, as a reboot
// flushes them; the chains CNI plugins share between pods stay.
func (e *env) flushRules(ids ...string) {
	e.t.Helper()
	for _, table := range []string{"filter", "nat"} {
		out, err := exec.Command("iptables-save", "-t", table).Output()
		if err != nil {
			e.t.Fatalf("iptables-save: %v", err)
		}
		chains := map[string]bool{}
		for _, l := range strings.Split(string(out), "\n") {
			mine := strings.Contains(l, e.subnet.IP.String())
			for _, id := range ids {
				mine = mine || strings.Contains(l, id)
			}
			if !mine || !strings.HasPrefix(l, "-A ") {
				continue
			}
			if f := strings.Fields(l); len(f) > 1 {
				for i := range f[:len(f)-1] {
					if f[i] == "-j" && strings.HasPrefix(f[i+1], "CNI-") && !strings.HasPrefix(f[i+1], "CNI-HOSTPORT-") {
						chains[f[i+1]] = true
					}
				}
			}
			// iptables-save quotes as a shell would: let one parse it.
			cmd := exec.Command("sh", "-c", "iptables -t "+table+" -D "+strings.TrimPrefix(l, "-A "))
			if out, err := cmd.CombinedOutput(); err != nil {
				e.t.Fatalf("reboot: delete rule %q: %v: %s", l, err, out)
			}
		}
		for c := range chains {
			_ = exec.Command("iptables", "-t", table, "-F", c).Run()
			_ = exec.Command("iptables", "-t", table, "-X", c).Run()
		}
	}
}

// takePID starts a process with the given PID (PIDs are handed out in
// order after /proc/sys/kernel/ns_last_pid, so it is set just before the
// fork; another fork on the machine may win the race, then it tries
// again), or fails the test.
func takePID(t *testing.T, pid int) *exec.Cmd {
	t.Helper()
	// Other processes fork too, and a thread may hold the PID for a
	// while: retry until it is free and ours, for a bounded time.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0o644); err != nil {
			t.Fatalf("ns_last_pid: %v", err)
		}
		cmd := exec.Command("sleep", "600")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if cmd.Process.Pid == pid {
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			return cmd
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	t.Fatalf("could not start a process with PID %d within 30 s; pidfds on it: %v", pid, pidfdHolders(pid))
	return nil
}

// pidfdHolders lists the processes holding a pidfd on pid, which keeps the
// number from being handed out again.
func pidfdHolders(pid int) []string {
	infos, _ := filepath.Glob("/proc/[0-9]*/fdinfo/*")
	var holders []string
	for _, f := range infos {
		b, err := os.ReadFile(f)
		if err == nil && strings.Contains(string(b), "Pid:\t"+strconv.Itoa(pid)+"\n") {
			holders = append(holders, f)
		}
	}
	return holders
}

// containerState returns a container's status.
func (e *env) containerStatus(id string) *runtimeapi.ContainerStatus {
	e.t.Helper()
	resp, err := e.rt.ContainerStatus(e.ctx(), &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		e.t.Fatalf("ContainerStatus %s: %v\n%s", id, err, e.logs())
	}
	return resp.Status
}

// Issue 11, item 4: after a reboot every container is EXITED with the
// reason "Unknown" (exit code 255, as containerd reports a task it lost)
// and a message, every pod NOTREADY, and all of them can be removed, even
// when a container's PID now names another live process. A container that
// exited before the reboot keeps its recorded exit.
func TestContainersAfterReboot(t *testing.T) {
	t.Parallel()
	e := containerEnv(t)
	pod := e.podConfig("reboot")
	podID := e.runPod(pod, "")
	sleeper := e.run(podID, pod, ctrConfig("sleeper", "sleep", "3600"))
	reused := e.run(podID, pod, ctrConfig("reused", "sleep", "3600"))
	done := e.run(podID, pod, ctrConfig("done", "sh", "-c", "exit 0"))
	e.waitExited(done, 10*time.Second)
	hostPod := e.podConfig("reboot-host")
	hostPod.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
	hostID := e.runPod(hostPod, "")
	hostCtr := e.run(hostID, hostPod, ctrConfig("host", "sleep", "3600"))
	reusedPID := e.containerPID(reused)

	e.simulateReboot(podID, hostID)
	// Another process now has the PID of one of the containers.
	takePID(t, reusedPID)
	e.restart()

	for _, id := range []string{sleeper, reused, hostCtr} {
		st := e.waitExited(id, 10*time.Second)
		if st.ExitCode != 255 || st.Reason != "Unknown" || st.Message == "" || st.FinishedAt < st.StartedAt {
			t.Errorf("container %s after a reboot: exit %d reason %q message %q; want 255, Unknown and why",
				st.Metadata.GetName(), st.ExitCode, st.Reason, st.Message)
		}
	}
	if st := e.containerStatus(done); st.ExitCode != 0 || st.Reason != "Completed" {
		t.Errorf("exited before the reboot: exit %d reason %q; want its recorded 0, Completed", st.ExitCode, st.Reason)
	}
	for _, id := range []string{podID, hostID} {
		if st, _ := e.status(id); st.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
			t.Errorf("pod %s after a reboot: %s", st.Metadata.GetName(), st.State)
		}
	}
	e.stopRemove(podID)
	e.stopRemove(hostID)
	if resp, err := e.rt.ListContainers(e.ctx(), &runtimeapi.ListContainersRequest{}); err != nil || len(resp.Containers) != 0 {
		t.Errorf("containers left after removing their pods: %v, %v", resp, err)
	}
	// The node works as before: the same pod again.
	podID = e.runPod(pod, "")
	if r := e.exec(e.run(podID, pod, ctrConfig("sleeper", "sleep", "3600")), 10, "echo", "up"); string(r.Stdout) != "up\n" {
		t.Errorf("exec after the reboot = %q", r.Stdout)
	}
	e.stopRemove(podID)
	e.assertNoLeaks(podID, hostID)
}

// editStore changes huskd's database while huskd is stopped.
func (e *env) editStore(edit func(tx *bolt.Tx) error) {
	e.t.Helper()
	db, err := bolt.Open(filepath.Join(e.root, "husk.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		e.t.Fatalf("open the store: %v", err)
	}
	defer db.Close()
	if err := db.Update(edit); err != nil {
		e.t.Fatalf("edit the store: %v", err)
	}
}

// Issue 11, item 5: an unreadable container or sandbox record does not
// keep huskd from starting. It is quarantined (moved out of its bucket
// with its bytes, logged with its key), what it owned on the host is
// released, its name is free for the kubelet to make the object again,
// and every other record is served.
func TestUnreadableRecordsAreQuarantined(t *testing.T) {
	t.Parallel()
	e := containerEnv(t)
	pod := e.podConfig("kept")
	podID := e.runPod(pod, "")
	keptCfg, lostCfg := ctrConfig("kept", "sleep", "3600"), ctrConfig("lost", "sleep", "3600")
	kept := e.run(podID, pod, keptCfg)
	lost := e.run(podID, pod, lostCfg)
	lostPID := e.containerPID(lost)
	lostPod := e.podConfig("lost")
	lostPodID := e.runPod(lostPod, "")
	_, lostPodInfo := e.status(lostPodID)
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	garbage := map[string][]byte{lost: []byte(`{"id": "` + lost + `", "name": `), lostPodID: []byte("\x00\x01 not a record")}
	e.editStore(func(tx *bolt.Tx) error {
		if err := tx.Bucket([]byte("containers")).Put([]byte(lost), garbage[lost]); err != nil {
			return err
		}
		return tx.Bucket([]byte("sandboxes")).Put([]byte(lostPodID), garbage[lostPodID])
	})
	e.start()

	for _, id := range []string{lost, lostPodID} {
		if len(e.logBuf.lines("quarantined an unreadable", id)) != 1 {
			t.Errorf("no log line names the quarantined record %s:\n%s", id, e.logs())
		}
	}
	if st := e.containerStatus(kept); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("the readable container is %s", st.State)
	}
	if _, err := e.rt.ContainerStatus(e.ctx(), &runtimeapi.ContainerStatusRequest{ContainerId: lost}); err == nil {
		t.Error("the quarantined container is served")
	}
	if _, err := e.rt.PodSandboxStatus(e.ctx(), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: lostPodID}); err == nil {
		t.Error("the quarantined sandbox is served")
	}
	// What they owned is released.
	if !pollUntil(5*time.Second, func() bool { return !alive(lostPID) && !alive(lostPodInfo.PID) }) {
		t.Errorf("the quarantined container's process (%v) or sandbox's infra (%v) still runs", alive(lostPID), alive(lostPodInfo.PID))
	}
	for _, p := range []string{filepath.Join(e.root, "containers", lost), filepath.Join(e.state, "containers", lost), lostPodInfo.NetnsPath} {
		if exists(p) {
			t.Errorf("%s is left", p)
		}
	}
	// Their names are free: the kubelet makes them again.
	again := e.run(podID, pod, lostCfg)
	if r := e.exec(again, 10, "echo", "again"); string(r.Stdout) != "again\n" {
		t.Errorf("exec in the container made again = %q", r.Stdout)
	}
	againPod := e.runPod(lostPod, "")
	e.stopRemove(podID)
	e.stopRemove(againPod)
	e.assertNoLeaks(podID, lostPodID, againPod)

	// The records are kept, as they were, in the quarantine bucket.
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	e.editStore(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("quarantine")).ForEach(func(k, v []byte) error {
			var q struct {
				Key   string `json:"key"`
				Value []byte `json:"value"`
			}
			if err := json.Unmarshal(v, &q); err != nil {
				return err
			}
			found[q.Key] = bytes.Equal(q.Value, garbage[q.Key])
			return nil
		})
	})
	if !found[lost] || !found[lostPodID] || len(found) != 2 {
		t.Errorf("quarantine holds %v; want both records as they were", found)
	}
}
