package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/huskrt/husk/internal/atomicfile"
	"github.com/huskrt/husk/internal/crilog"
	"github.com/huskrt/husk/internal/monitor/proto"
)

// drainTimeout bounds how long an exit waits for the container's output
// to be copied: a process the container left behind may hold the pipes.
const drainTimeout = 2 * time.Second

// create has the runtime create a container (run: create and start it)
// whose stdio are pipes (or a terminal) this process reads, then follows
// the container's init until it exits. Until the runtime reports the
// init's PID a failure undoes everything here (huskd deletes what the
// runtime made); after it nothing can fail: the container exists and only
// its exit is left to record.
func (m *monitor) create(cr *proto.Create, run bool) (int, error) {
	if err := m.checkCreate(cr); err != nil {
		return 0, err
	}
	logf, err := crilog.Open(cr.LogPath)
	if err != nil {
		return 0, fmt.Errorf("container %s: open log: %w", cr.ID, err)
	}
	cio, err := m.openStdio(cr)
	if err != nil {
		logf.Close()
		return 0, fmt.Errorf("container %s: %w", cr.ID, err)
	}
	initPID, err := m.runtimeCreate(cr, cio, run)
	if err != nil {
		cio.close()
		logf.Close()
		return 0, fmt.Errorf("container %s: %w", cr.ID, err)
	}
	// An init that exited already was kept in m.unclaimed by the reaper:
	// its status cannot be lost.
	initStatus := m.waitFor(initPID)
	c := &container{id: cr.ID, pid: initPID, exitFile: cr.ExitFile, log: logf, stdin: cio.stdin, tty: cr.Tty,
		stdinOnce: cr.StdinOnce, exited: make(chan struct{}), attached: map[*attachment]struct{}{}}
	copying := c.copyOutput(cio.readers, cio.master)
	m.mu.Lock()
	m.containers[cr.ID] = c
	m.mu.Unlock()
	go c.recordExit(initStatus, copying)
	return initPID, nil
}

// checkCreate refuses an incomplete request and a second create of one ID.
func (m *monitor) checkCreate(cr *proto.Create) error {
	if cr == nil || cr.ID == "" || cr.Bundle == "" || cr.LogPath == "" || cr.ExitFile == "" {
		return &coded{proto.CodeInvalidArgument, fmt.Errorf("create: incomplete request")}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.containers[cr.ID]; ok {
		return &coded{proto.CodeAlreadyExists, fmt.Errorf("container %s: already created", cr.ID)}
	}
	return nil
}

// runtimeCreate runs `runtime create` (run: `runtime run --detach`) with
// the container's stdio and returns the PID of the container's init.
func (m *monitor) runtimeCreate(cr *proto.Create, cio *containerIO, run bool) (int, error) {
	runtimeLog := filepath.Join(cr.Bundle, "runtime.log")
	pidFile := filepath.Join(cr.Bundle, "init.pid")
	args := []string{cr.Runtime, "--root", cr.RuntimeRoot, "--log=" + runtimeLog, "--log-format=json"}
	if cr.SystemdCgroup {
		args = append(args, "--systemd-cgroup")
	}
	op := "create"
	if run {
		op = "run"
		args = append(args, op, "--detach")
	} else {
		args = append(args, op)
	}
	args = append(args, "--bundle", cr.Bundle, "--pid-file", pidFile)
	if cio.console != nil {
		args = append(args, "--console-socket", cio.console.path)
	}
	args = append(args, cr.ID)
	exe := cr.Runtime
	if cr.RuntimeExec != "" {
		exe = cr.RuntimeExec
	}
	pid, err := syscall.ForkExec(exe, args, &syscall.ProcAttr{
		Dir:   cr.Bundle,
		Env:   []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Files: cio.stdio[:],
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		return 0, fmt.Errorf("start runtime %s: %w", cr.Runtime, err)
	}
	status := m.waitFor(pid)
	// Must happen whatever follows: while this process holds the child's
	// ends, the log copy never sees the container close its output.
	cio.closeChild()
	if cio.console != nil {
		// The runtime sends the terminal's master before it exits.
		master, err := cio.console.receive(30 * time.Second)
		if err != nil {
			<-status
			return 0, fmt.Errorf("receive terminal: %w", err)
		}
		cio.useMaster(master)
	}
	if ws := <-status; !ws.Exited() || ws.ExitStatus() != 0 {
		return 0, fmt.Errorf("runtime %s failed (%s): %s", op, describe(ws), runtimeError(runtimeLog))
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, fmt.Errorf("read pid file: %w", err)
	}
	initPID, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || initPID <= 0 {
		return 0, fmt.Errorf("bad pid file %q", b)
	}
	return initPID, nil
}

// copyOutput copies each reader (stdout then stderr, or the terminal's
// master alone) into the log and to attached clients. The WaitGroup is
// done when every reader reached its end.
func (c *container) copyOutput(readers []*os.File, master *os.File) *sync.WaitGroup {
	var copying sync.WaitGroup
	for i, r := range readers {
		stream, kind := crilog.Stdout, proto.FrameStdout
		if i == 1 {
			stream, kind = crilog.Stderr, proto.FrameStderr
		}
		copying.Add(1)
		go func() {
			defer copying.Done()
			// A failed log write ends this copy, never the container:
			// the pipe then fills and the writer blocks, as with a
			// full disk under any runtime.
			_ = c.log.Copy(stream, io.TeeReader(r, fanout{c, kind}))
			if r != master {
				r.Close() // the master stays: it is the terminal's input too
			}
		}()
	}
	return &copying
}

// recordExit waits for the container's init, lets its output drain, ends
// the attached clients and records the exit before anyone is told.
func (c *container) recordExit(initStatus <-chan unix.WaitStatus, copying *sync.WaitGroup) {
	ws := <-initStatus
	exit := proto.Exit{At: time.Now().UnixNano()}
	if ws.Signaled() {
		exit.Code, exit.Signaled = 128+int32(ws.Signal()), true
	} else {
		exit.Code = int32(ws.ExitStatus())
	}
	drained := make(chan struct{})
	go func() { copying.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(drainTimeout):
		// A process the container left behind holds the pipes: the
		// exit must not wait for it.
	}
	c.closeAttachments()
	// Must not fail, and cannot be retried: without the file, a huskd
	// restarted later has no exit code. Say so; waiters still get it.
	if err := writeExit(c.exitFile, &exit); err != nil {
		fmt.Fprintf(os.Stderr, "husk-monitor: container %s: record exit: %v\n", c.id, err)
	}
	c.exit = exit
	close(c.exited) // publishes c.exit to every wait
}

// writeExit records an exit so that it survives a crash of the monitor,
// huskd or the node: written, synced, renamed into place, dir synced.
func writeExit(path string, e *proto.Exit) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, b, 0o600)
}

func describe(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + ws.Signal().String()
	}
	return "exit status " + strconv.Itoa(ws.ExitStatus())
}

// runtimeError extracts the messages of the runtime's log (runc writes
// JSON or text lines, crun text), the last few only.
func runtimeError(path string) string {
	b, _ := os.ReadFile(path)
	var msgs []string
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var entry struct {
			Msg   string `json:"msg"`
			Level string `json:"level"`
		}
		if json.Unmarshal(line, &entry) == nil && entry.Msg != "" {
			if entry.Level == "error" || entry.Level == "fatal" || entry.Level == "" {
				msgs = append(msgs, entry.Msg)
			}
			continue
		}
		if len(line) > 0 {
			msgs = append(msgs, string(line))
		}
	}
	if len(msgs) > 3 {
		msgs = msgs[len(msgs)-3:]
	}
	if len(msgs) == 0 {
		return "no error output"
	}
	return strings.Join(msgs, "; ")
}
