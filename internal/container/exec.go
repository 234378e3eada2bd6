package container

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
)

// MaxExecOutput caps each stream of ExecSync, as the kubelet's own limit.
const MaxExecOutput = 16 << 20

// ErrOutputTooLarge is returned when an ExecSync stream passes the cap.
var ErrOutputTooLarge = fmt.Errorf("exec output exceeds 16 MiB: %w", errdefs.ErrResourceExhausted)

// cappedBuffer keeps the first max bytes and remembers overflowing; it
// never fails a write, so the process is not killed by a broken pipe.
type cappedBuffer struct {
	buf      bytes.Buffer
	max      int
	overflow bool
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room < len(p) {
		b.overflow = true
		if room > 0 {
			b.buf.Write(p[:room])
		}
		return len(p), nil
	}
	return b.buf.Write(p)
}

// ExecSync runs cmd in a running container and returns its output and
// exit code: Exec with capped buffers. A timeout (0: none) kills the
// process and is DeadlineExceeded.
func (m *Manager) ExecSync(ctx context.Context, id string, cmd []string, timeout time.Duration) (stdout, stderr []byte, code int32, err error) {
	execCtx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		execCtx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	outBuf := &cappedBuffer{max: MaxExecOutput}
	errBuf := &cappedBuffer{max: MaxExecOutput}
	err = m.Exec(execCtx, id, cmd, nil, outBuf, errBuf, false, nil)
	var exit *ExitError
	switch {
	case errors.As(err, &exit):
		code = int32(exit.Code)
	case err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
		return outBuf.buf.Bytes(), errBuf.buf.Bytes(), 0, fmt.Errorf("exec %q timed out after %s: %w", strings.Join(cmd, " "), timeout, err)
	case err != nil:
		return nil, nil, 0, err
	}
	if outBuf.overflow || errBuf.overflow {
		return outBuf.buf.Bytes(), errBuf.buf.Bytes(), 0, fmt.Errorf("container %s: exec %q: %w", id, strings.Join(cmd, " "), ErrOutputTooLarge)
	}
	return outBuf.buf.Bytes(), errBuf.buf.Bytes(), code, nil
}

// ExitError carries the exit code of a streamed exec.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("command exited with %d", e.Code) }

// Exec runs cmd in a running container with the client's streams: stdin
// (nil: none), stdout and stderr (stderr is unused with a terminal), and
// terminal resizes. It returns when the process exits; a non-zero exit
// is an *ExitError. A cancelled ctx (the client went away) kills it.
func (m *Manager) Exec(ctx context.Context, id string, cmd []string, in io.Reader, out, errw io.Writer, tty bool, resize <-chan remotecommand.TerminalSize) error {
	if len(cmd) == 0 {
		return fmt.Errorf("exec: cmd is empty: %w", errdefs.ErrInvalidArgument)
	}
	// 1. The container's own process with cmd, for the runtime's exec.
	x, err := m.newExec(id, cmd, tty)
	if err != nil {
		return err
	}
	defer x.close()
	// 2. Its stdio (a terminal we hold, or the client's streams), and
	// the runtime started.
	if err := x.start(in, out, errw); err != nil {
		return fmt.Errorf("container %s: exec: %w", x.id, err)
	}
	// 3. Resizes until it exits or the client leaves.
	return x.wait(ctx, resize)
}

// execProcess is one streamed exec: the runtime's exec and what it holds.
type execProcess struct {
	id  string // the container's
	dir string // process.json and the runtime's pid file; removed by close
	// pidFile names the exec'd process, which a gone client kills.
	pidFile string
	cmd     *exec.Cmd
	tty     bool
	// pty is our end of the exec's terminal (nil without one); copied is
	// closed once the terminal's output is copied to the client.
	pty    *os.File
	copied chan struct{}
}

// newExec writes the exec's process and makes the runtime's exec command.
func (m *Manager) newExec(id string, cmd []string, tty bool) (*execProcess, error) {
	_, v, err := m.running(id)
	if err != nil {
		return nil, err
	}
	rt, err := m.opts.Runtimes.Get(v.Handler)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(m.bundleDir(v.ID), "exec-")
	if err != nil {
		return nil, fmt.Errorf("container %s: exec: %w", v.ID, err)
	}
	procFile, err := m.writeExecProcess(v.ID, dir, cmd, tty)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	pidFile := filepath.Join(dir, "pid")
	return &execProcess{id: v.ID, dir: dir, pidFile: pidFile, tty: tty, cmd: rt.ExecCommand(v.ID, pidFile, procFile)}, nil
}

// start connects the exec's stdio and starts the runtime.
func (x *execProcess) start(in io.Reader, out, errw io.Writer) error {
	var childEnds []io.Closer // the runtime's copies are all it needs
	var err error
	if x.tty {
		childEnds, err = x.useTerminal()
	} else {
		childEnds, err = x.usePipes(in, out, errw)
	}
	if err != nil {
		return err
	}
	err = x.cmd.Start()
	for _, f := range childEnds {
		f.Close()
	}
	if err != nil {
		return err
	}
	if x.pty != nil {
		x.copyTerminal(in, out)
	}
	return nil
}

// useTerminal gives the runtime a terminal. The runtime, not detached,
// relays between its own stdio and the container's terminal when its
// stdin is a terminal: it gets the slave of a pty we hold as its
// controlling terminal, so a resize of ours reaches it as SIGWINCH and it
// resizes the container's.
func (x *execProcess) useTerminal() ([]io.Closer, error) {
	master, slave, err := openPty()
	if err != nil {
		return nil, err
	}
	x.pty = master
	x.cmd.Stdin, x.cmd.Stdout, x.cmd.Stderr = slave, slave, slave
	x.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	return []io.Closer{slave}, nil
}

// usePipes gives the runtime the client's streams. Stdin goes through a
// pipe of ours, not as cmd.Stdin = in: Wait would then wait for in to
// end, which an interactive client may never do.
func (x *execProcess) usePipes(in io.Reader, out, errw io.Writer) ([]io.Closer, error) {
	x.cmd.Stdout, x.cmd.Stderr = out, errw
	if errw == nil {
		x.cmd.Stderr = out
	}
	if in == nil {
		return nil, nil
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	x.cmd.Stdin = pr
	go func() {
		_, _ = io.Copy(pw, in)
		pw.Close()
	}()
	return []io.Closer{pr}, nil
}

// copyTerminal copies the client's stdin to the terminal and the
// terminal's output to the client.
func (x *execProcess) copyTerminal(in io.Reader, out io.Writer) {
	if in != nil {
		go func() { _, _ = io.Copy(x.pty, in) }()
	}
	x.copied = make(chan struct{})
	go func() {
		// EIO once the runtime's end of the pty is gone.
		_, _ = io.Copy(out, x.pty)
		close(x.copied)
	}()
}

// wait applies resizes to the terminal until the runtime exits, and kills
// the exec'd process when ctx ends first.
func (x *execProcess) wait(ctx context.Context, resize <-chan remotecommand.TerminalSize) error {
	done := make(chan error, 1)
	go func() { done <- x.cmd.Wait() }()
	for {
		select {
		case size, ok := <-resize:
			if !ok {
				resize = nil
				continue
			}
			if x.pty != nil {
				_ = unix.IoctlSetWinsize(int(x.pty.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: size.Height, Col: size.Width})
			}
		case <-ctx.Done():
			killExec(x.pidFile, x.cmd)
			<-done
			return fmt.Errorf("container %s: exec: %w", x.id, ctx.Err())
		case err := <-done:
			return execResult(x.id, err)
		}
	}
}

// execResult is Exec's answer for how the runtime ended: nil, an
// *ExitError (128+n for signal n, as shells report it), or the error
// naming the container.
func execResult(id string, err error) error {
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		code := exitErr.ExitCode()
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		return &ExitError{Code: code}
	}
	if err != nil {
		return fmt.Errorf("container %s: exec: %w", id, err)
	}
	return nil
}

// close waits for the terminal's output to be copied, then releases the
// terminal and the exec's dir.
func (x *execProcess) close() {
	if x.copied != nil {
		<-x.copied
	}
	if x.pty != nil {
		x.pty.Close()
	}
	os.RemoveAll(x.dir)
}

// Running returns nil when the container runs, else why not: the check
// before a streaming URL is handed out.
func (m *Manager) Running(id string) error {
	_, _, err := m.running(id)
	return err
}

// running finds a container that must be running for what is asked.
func (m *Manager) running(id string) (*Container, *Record, error) {
	c, err := m.index.Get(id)
	if err != nil {
		return nil, nil, err
	}
	v := c.view()
	if v.State != StateRunning {
		return nil, nil, fmt.Errorf("container %s is not running: %w", v.ID, errdefs.ErrFailedPrecondition)
	}
	return c, v, nil
}

// killExec kills the exec'd process (its PID from the runtime's pid file)
// and then the runtime that waits for it.
func killExec(pidFile string, ex *exec.Cmd) {
	if b, err := os.ReadFile(pidFile); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	// The runtime exits once its process is gone; kill it too in case the
	// pid file was never written.
	time.AfterFunc(2*time.Second, func() { _ = ex.Process.Kill() })
}

// Reopen reopens a running container's log (after the kubelet rotated it).
func (m *Manager) Reopen(ctx context.Context, id string) error {
	_, v, err := m.running(id)
	if err != nil {
		return err
	}
	if err := m.monitorClient(v.SandboxID).Reopen(ctx, v.ID); err != nil {
		if goneOrUnknown(err) {
			// The container is there; the monitor that logged its
			// output is not (killed): not the CRI's NotFound.
			return fmt.Errorf("container %s: reopen log: its output is not logged any more, its monitor is gone: %w", v.ID, errdefs.ErrFailedPrecondition)
		}
		return fmt.Errorf("container %s: reopen log: %w", v.ID, err)
	}
	return nil
}

// writeExecProcess writes the process of an exec: the container's own
// process (user, groups, env, cwd, capabilities, no_new_privs, rlimits)
// with the exec's args and terminal, as kubectl exec users expect.
func (m *Manager) writeExecProcess(id, dir string, cmd []string, tty bool) (string, error) {
	b, err := os.ReadFile(filepath.Join(m.bundleDir(id), "config.json"))
	if err != nil {
		return "", fmt.Errorf("container %s: exec: read spec: %w", id, err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil || spec.Process == nil {
		return "", fmt.Errorf("container %s: exec: bad spec: %v", id, err)
	}
	p := spec.Process
	p.Args, p.Terminal, p.ConsoleSize = cmd, tty, nil
	// The container's oom_score_adj was set at its start; an exec process
	// inherits it from the container's namespace processes anyway.
	p.OOMScoreAdj = nil
	pb, err := json.Marshal(p)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "process.json")
	if err := os.WriteFile(path, pb, 0o600); err != nil {
		return "", fmt.Errorf("container %s: exec: %w", id, err)
	}
	return path, nil
}
