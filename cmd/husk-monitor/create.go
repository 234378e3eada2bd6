package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/huskrt/husk/internal/crilog"
	"github.com/huskrt/husk/internal/monitor/proto"
)

// drainTimeout bounds how long an exit waits for the container's output
// to be copied: a process the container left behind may hold the pipes.
const drainTimeout = 2 * time.Second

// create runs the runtime's create command with the container's stdio
// wired to pipes (or a terminal) this process reads, then follows the
// container's init until it exits.
func (m *monitor) create(cr *proto.Create) (int, error) {
	if cr == nil || cr.ID == "" || cr.Bundle == "" || cr.LogPath == "" || cr.ExitFile == "" {
		return 0, fmt.Errorf("create: incomplete request")
	}
	m.mu.Lock()
	if _, ok := m.containers[cr.ID]; ok {
		m.mu.Unlock()
		return 0, fmt.Errorf("container %s: already created", cr.ID)
	}
	m.mu.Unlock()

	logf, err := crilog.Open(cr.LogPath)
	if err != nil {
		return 0, fmt.Errorf("container %s: open log: %w", cr.ID, err)
	}
	var (
		closeAfterStart []*os.File // the child's ends
		readers         []*os.File // ours: copied into the log
		stdinW          *os.File
		console         *consoleSocket
	)
	fail := func(err error) (int, error) {
		for _, f := range append(closeAfterStart, readers...) {
			f.Close()
		}
		if stdinW != nil {
			stdinW.Close()
		}
		if console != nil {
			console.close()
		}
		logf.Close()
		return 0, fmt.Errorf("container %s: %w", cr.ID, err)
	}
	devNull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return fail(err)
	}
	closeAfterStart = append(closeAfterStart, devNull)
	stdio := []uintptr{devNull.Fd(), devNull.Fd(), devNull.Fd()}
	runtimeLog := filepath.Join(cr.Bundle, "runtime.log")
	pidFile := filepath.Join(cr.Bundle, "init.pid")
	args := []string{cr.Runtime, "--root", cr.RuntimeRoot, "--log=" + runtimeLog, "--log-format=json"}
	if cr.SystemdCgroup {
		args = append(args, "--systemd-cgroup")
	}
	args = append(args, "create", "--bundle", cr.Bundle, "--pid-file", pidFile)
	if cr.Tty {
		// In the monitor's short dir: socket paths are limited to 108 bytes.
		short := cr.ID
		if len(short) > 16 {
			short = short[:16]
		}
		console, err = listenConsole(filepath.Join(m.dir, "tty-"+short+".sock"))
		if err != nil {
			return fail(err)
		}
		args = append(args, "--console-socket", console.path)
	} else {
		outR, outW, err := os.Pipe()
		if err != nil {
			return fail(err)
		}
		errR, errW, err := os.Pipe()
		if err != nil {
			outR.Close()
			outW.Close()
			return fail(err)
		}
		readers = append(readers, outR, errR)
		closeAfterStart = append(closeAfterStart, outW, errW)
		stdio[1], stdio[2] = outW.Fd(), errW.Fd()
	}
	if cr.Stdin && !cr.Tty {
		inR, inW, err := os.Pipe()
		if err != nil {
			return fail(err)
		}
		stdinW = inW
		closeAfterStart = append(closeAfterStart, inR)
		stdio[0] = inR.Fd()
	}
	args = append(args, cr.ID)

	pid, err := syscall.ForkExec(cr.Runtime, args, &syscall.ProcAttr{
		Dir:   cr.Bundle,
		Env:   []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Files: stdio,
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		return fail(fmt.Errorf("start runtime %s: %w", cr.Runtime, err))
	}
	status := m.waitFor(pid)
	for _, f := range closeAfterStart {
		f.Close()
	}
	closeAfterStart = nil
	var master *os.File
	if console != nil {
		// The runtime sends the terminal's master before it exits.
		master, err = console.receive(30 * time.Second)
		if err != nil {
			<-status
			return fail(fmt.Errorf("receive terminal: %w", err))
		}
		readers = append(readers, master)
		stdinW = master
	}
	if ws := <-status; !ws.Exited() || ws.ExitStatus() != 0 {
		return fail(fmt.Errorf("runtime create failed (%s): %s", describe(ws), runtimeError(runtimeLog)))
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return fail(fmt.Errorf("read pid file: %w", err))
	}
	initPID, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || initPID <= 0 {
		return fail(fmt.Errorf("bad pid file %q", b))
	}
	initStatus := m.waitFor(initPID)

	c := &container{id: cr.ID, pid: initPID, exitFile: cr.ExitFile, log: logf, stdin: stdinW, tty: cr.Tty,
		stdinOnce: cr.StdinOnce, exited: make(chan struct{}), attached: map[*attachment]struct{}{}}
	var copying sync.WaitGroup
	for i, r := range readers {
		stream, kind := crilog.Stdout, proto.FrameStdout
		if i == 1 {
			stream, kind = crilog.Stderr, proto.FrameStderr
		}
		copying.Add(1)
		go func(stream string, kind byte, r *os.File) {
			defer copying.Done()
			_ = logf.Copy(stream, io.TeeReader(r, fanout{c, kind}))
			if r != master {
				r.Close()
			}
		}(stream, kind, r)
	}
	m.mu.Lock()
	m.containers[cr.ID] = c
	m.mu.Unlock()

	go func() {
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
		}
		c.closeAttachments()
		if err := writeExit(cr.ExitFile, &exit); err != nil {
			fmt.Fprintf(os.Stderr, "husk-monitor: container %s: record exit: %v\n", cr.ID, err)
		}
		c.exit = exit
		close(c.exited)
	}()
	return initPID, nil
}

// writeExit records an exit so that it survives a crash of the monitor,
// huskd or the node: written, synced, renamed into place, dir synced.
func writeExit(path string, e *proto.Exit) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
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

// consoleSocket receives a terminal's master from the runtime
// (--console-socket), as a file descriptor in an SCM_RIGHTS message.
type consoleSocket struct {
	path string
	l    *net.UnixListener
}

func listenConsole(path string) (*consoleSocket, error) {
	_ = os.Remove(path)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("console socket: %w", err)
	}
	return &consoleSocket{path: path, l: l}, nil
}

func (c *consoleSocket) close() {
	c.l.Close()
	_ = os.Remove(c.path)
}

func (c *consoleSocket) receive(timeout time.Duration) (*os.File, error) {
	defer c.close()
	_ = c.l.SetDeadline(time.Now().Add(timeout))
	conn, err := c.l.AcceptUnix()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	_, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("no terminal in the console socket message")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, fmt.Errorf("no terminal in the console socket message")
	}
	return os.NewFile(uintptr(fds[0]), "pty-master"), nil
}
