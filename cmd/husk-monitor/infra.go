package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/huskrt/husk/internal/monitor/proto"
)

// setupTimeout bounds the infra's setup, which is a few system calls.
const setupTimeout = 30 * time.Second

// infra is the pod's infra process, this monitor's child.
type infra struct {
	id string
	// pid is 0 until it started (guarded by monitor.mu).
	pid    int
	exited chan struct{}
	exit   proto.Exit // set before exited is closed
}

// startInfra starts the pod's infra, directly or through the runtime,
// and follows it until it exits. A failure before its PID is known
// leaves nothing behind (a child started is killed and reaped).
func (m *monitor) startInfra(in *proto.Infra) (int, []byte, error) {
	if in == nil || in.ID == "" || in.LogPath == "" || (in.Path == "") == (in.Runtime == "") {
		return 0, nil, &coded{proto.CodeInvalidArgument, fmt.Errorf("infra: incomplete request")}
	}
	inf := &infra{id: in.ID, exited: make(chan struct{})}
	m.mu.Lock()
	if m.infra != nil {
		m.mu.Unlock()
		return 0, nil, &coded{proto.CodeAlreadyExists, fmt.Errorf("infra of sandbox %s: already started", in.ID)}
	}
	m.infra = inf
	m.mu.Unlock()
	pid, status, report, err := m.spawnInfra(in)
	if err != nil {
		m.mu.Lock()
		m.infra = nil
		m.mu.Unlock()
		return 0, nil, fmt.Errorf("infra of sandbox %s: %w", in.ID, err)
	}
	m.mu.Lock()
	inf.pid = pid
	m.mu.Unlock()
	go m.followInfra(inf, pid, status)
	return pid, report, nil
}

// spawnInfra starts the infra with its stdio: /dev/null, and the log.
func (m *monitor) spawnInfra(in *proto.Infra) (int, <-chan unix.WaitStatus, []byte, error) {
	logf, err := os.OpenFile(in.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("open log: %w", err)
	}
	defer logf.Close()
	devNull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return 0, nil, nil, err
	}
	defer devNull.Close()
	stdio := []uintptr{devNull.Fd(), devNull.Fd(), logf.Fd()}
	if in.Runtime != "" {
		pid, status, err := m.runtimeRun(in, stdio)
		return pid, status, nil, err
	}
	return m.forkInfra(in, stdio)
}

// forkInfra forks and execs husk-pause in its namespaces, places it while
// it waits for its setup program, sends the program and reads the report.
func (m *monitor) forkInfra(in *proto.Infra, stdio []uintptr) (int, <-chan unix.WaitStatus, []byte, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("setup channel: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "infra setup")
	defer ours.Close()
	attr := &syscall.SysProcAttr{Setsid: true, Cloneflags: in.Cloneflags}
	if len(in.UIDMappings) > 0 {
		attr.UidMappings, attr.GidMappings = idMappings(in.UIDMappings), idMappings(in.GIDMappings)
		// The pod's containers join this user namespace and set their
		// groups there; and the infra is its root, not the node's root
		// (which it does not map), so that exec keeps its capabilities.
		attr.GidMappingsEnableSetgroups = true
		attr.Credential = &syscall.Credential{Uid: 0, Gid: 0}
	}
	pid, err := syscall.ForkExec(in.Path, in.Args, &syscall.ProcAttr{
		Dir: "/", Env: []string{}, Files: append(stdio, uintptr(fds[1])), Sys: attr,
	})
	unix.Close(fds[1])
	if err != nil {
		return 0, nil, nil, fmt.Errorf("start %s: %w", in.Path, err)
	}
	status := m.waitFor(pid)
	fail := func(err error) (int, <-chan unix.WaitStatus, []byte, error) {
		_ = unix.Kill(pid, unix.SIGKILL) // our child, not reaped yet: no other process has its PID
		<-status
		return 0, nil, nil, err
	}
	// Before it runs anything that allocates: its memory and processes
	// count in its cgroups from the start.
	for _, f := range in.CgroupProcs {
		if err := os.WriteFile(f, []byte(strconv.Itoa(pid)), 0); err != nil {
			return fail(fmt.Errorf("join cgroup: %w", err))
		}
	}
	if err := os.WriteFile("/proc/"+strconv.Itoa(pid)+"/oom_score_adj", []byte(strconv.Itoa(in.OOMScoreAdj)), 0); err != nil {
		return fail(fmt.Errorf("oom_score_adj: %w", err))
	}
	_ = ours.SetDeadline(time.Now().Add(setupTimeout))
	if _, err := ours.Write(in.Setup); err != nil {
		return fail(fmt.Errorf("send setup: %w", err))
	}
	report, err := io.ReadAll(ours)
	if err != nil {
		return fail(fmt.Errorf("read setup report: %w", err))
	}
	if len(report) == 0 {
		// It ended without a word: killed, or it could not read the
		// program; its status says which.
		select {
		case ws := <-status:
			return 0, nil, nil, fmt.Errorf("%s exited during setup (%s): %s", in.Path, describe(ws), logTail(in.LogPath))
		case <-time.After(setupTimeout):
			return fail(fmt.Errorf("%s closed its setup channel without a report", in.Path))
		}
	}
	return pid, status, report, nil
}

func idMappings(in []proto.IDMapping) []syscall.SysProcIDMap {
	out := make([]syscall.SysProcIDMap, 0, len(in))
	for _, m := range in {
		out = append(out, syscall.SysProcIDMap{ContainerID: int(m.ContainerID), HostID: int(m.HostID), Size: int(m.Size)})
	}
	return out
}

// runtimeRun runs `runtime run --detach`, which leaves the infra running
// as this process's child (a child subreaper), and returns its PID.
func (m *monitor) runtimeRun(in *proto.Infra, stdio []uintptr) (int, <-chan unix.WaitStatus, error) {
	pidFile := filepath.Join(in.Bundle, "pid")
	args := []string{in.Runtime, "--root", in.RuntimeRoot}
	if in.SystemdCgroup {
		args = append(args, "--systemd-cgroup")
	}
	args = append(args, "run", "--detach", "--no-new-keyring", "--bundle", in.Bundle, "--pid-file", pidFile, in.ID)
	runtimePID, err := syscall.ForkExec(in.Runtime, args, &syscall.ProcAttr{
		Dir:   in.Bundle,
		Env:   []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Files: stdio,
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		return 0, nil, fmt.Errorf("start runtime %s: %w", in.Runtime, err)
	}
	if ws := <-m.waitFor(runtimePID); !ws.Exited() || ws.ExitStatus() != 0 {
		return 0, nil, fmt.Errorf("runtime run failed (%s): %s", describe(ws), logTail(in.LogPath))
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, nil, fmt.Errorf("read pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, nil, fmt.Errorf("bad pid file %q", b)
	}
	// Reaped already if it exited at once: the reaper kept its status.
	return pid, m.waitFor(pid), nil
}

// followInfra waits for the infra's exit and records it for wait.
func (m *monitor) followInfra(inf *infra, pid int, status <-chan unix.WaitStatus) {
	ws := <-status
	inf.exit = exitOf(ws)
	fmt.Fprintf(os.Stderr, "husk-monitor: infra %d of sandbox %s: %s\n", pid, inf.id, describe(ws))
	close(inf.exited)
}

// logTail is the end of a log, to say why something failed.
func logTail(path string) string {
	b, _ := os.ReadFile(path)
	s := strings.TrimSpace(string(b))
	if len(s) > 1024 {
		s = s[len(s)-1024:]
	}
	if s == "" {
		return "no error output"
	}
	return s
}

// exitOf is how a child ended, as the protocol says it.
func exitOf(ws unix.WaitStatus) proto.Exit {
	e := proto.Exit{At: time.Now().UnixNano(), Code: int32(ws.ExitStatus())}
	if ws.Signaled() {
		e.Code, e.Signaled = 128+int32(ws.Signal()), true
	}
	return e
}

// waitInfra answers a wait for the infra of sandbox id; ok is false when
// id is not the infra's.
func (m *monitor) waitInfra(id string) (*proto.Response, bool) {
	m.mu.Lock()
	inf := m.infra
	started := inf != nil && inf.id == id && inf.pid != 0
	m.mu.Unlock()
	if !started {
		return nil, false
	}
	<-inf.exited
	e := inf.exit
	return &proto.Response{Exit: &e}, true
}

// infraRunningLocked tells whether the infra was started and has not exited.
func (m *monitor) infraRunningLocked() bool {
	if m.infra == nil {
		return false
	}
	select {
	case <-m.infra.exited:
		return false
	default:
		return true
	}
}
