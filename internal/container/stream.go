package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"unsafe"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// TerminalSize is a terminal resize request.
type TerminalSize struct {
	Width, Height uint16
}

// ExitError carries the exit code of a streamed exec.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("command exited with %d", e.Code) }

// Exec runs cmd in a running container with the client's streams: stdin
// (nil: none), stdout and stderr (stderr is unused with a terminal), and
// terminal resizes. It returns when the process exits; a non-zero exit
// is an *ExitError. A cancelled ctx (the client went away) kills it.
func (m *Manager) Exec(ctx context.Context, id string, cmd []string, in io.Reader, out, errw io.Writer, tty bool, resize <-chan TerminalSize) error {
	if len(cmd) == 0 {
		return fmt.Errorf("exec: cmd is empty: %w", errdefs.ErrInvalidArgument)
	}
	_, v, err := m.running(id)
	if err != nil {
		return err
	}
	rt, err := m.runtimeFor(v.Handler)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(m.bundleDir(v.ID), "exec-")
	if err != nil {
		return fmt.Errorf("container %s: exec: %w", v.ID, err)
	}
	defer os.RemoveAll(dir)
	pidFile := filepath.Join(dir, "pid")
	procFile, err := m.writeExecProcess(v.ID, dir, cmd, tty)
	if err != nil {
		return err
	}
	ex := rt.ExecCommand(v.ID, pidFile, procFile)

	var closeAfterStart []io.Closer
	var master *os.File
	if tty {
		// The runtime, not detached, relays between its own stdio and the
		// container's terminal when its stdin is a terminal: give it one
		// (the slave of a pty we hold) as its controlling terminal, so a
		// resize of ours reaches it as SIGWINCH and it resizes the
		// container's.
		var slave *os.File
		master, slave, err = openPty()
		if err != nil {
			return fmt.Errorf("container %s: exec: %w", v.ID, err)
		}
		defer master.Close()
		ex.Stdin, ex.Stdout, ex.Stderr = slave, slave, slave
		ex.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
		closeAfterStart = append(closeAfterStart, slave)
	} else {
		ex.Stdout, ex.Stderr = out, errw
		if errw == nil {
			ex.Stderr = out
		}
		if in != nil {
			// Not ex.Stdin = in: Wait would then wait for in to end,
			// which an interactive client may never do.
			pr, pw, err := os.Pipe()
			if err != nil {
				return err
			}
			ex.Stdin = pr
			closeAfterStart = append(closeAfterStart, pr)
			go func() {
				_, _ = io.Copy(pw, in)
				pw.Close()
			}()
		}
	}
	if err := ex.Start(); err != nil {
		for _, f := range closeAfterStart {
			f.Close()
		}
		return fmt.Errorf("container %s: exec: %w", v.ID, err)
	}
	for _, f := range closeAfterStart {
		f.Close()
	}
	if master != nil {
		if in != nil {
			go func() { _, _ = io.Copy(master, in) }()
		}
		copied := make(chan struct{})
		go func() {
			// EIO once the runtime's end of the pty is gone.
			_, _ = io.Copy(out, master)
			close(copied)
		}()
		defer func() { <-copied }()
	}
	done := make(chan error, 1)
	go func() { done <- ex.Wait() }()
	for {
		select {
		case size, ok := <-resize:
			if !ok {
				resize = nil
				continue
			}
			if master != nil {
				_ = unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: size.Height, Col: size.Width})
			}
		case <-ctx.Done():
			killExec(pidFile, ex)
			<-done
			return fmt.Errorf("container %s: exec: %w", v.ID, ctx.Err())
		case err := <-done:
			var exitErr *exec.ExitError
			if errors.As(err, &exitErr) {
				code := exitErr.ExitCode()
				if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					code = 128 + int(ws.Signal())
				}
				return &ExitError{Code: code}
			}
			if err != nil {
				return fmt.Errorf("container %s: exec: %w", v.ID, err)
			}
			return nil
		}
	}
}

// openPty opens a new pseudo-terminal pair.
func openPty() (master, slave *os.File, err error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open pty: %w", err)
	}
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), unix.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		m.Close()
		return nil, nil, fmt.Errorf("unlock pty: %w", e)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("pty number: %w", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("open pty slave: %w", err)
	}
	return m, s, nil
}

// Attach connects the client to a running container's stdio through the
// pod's monitor. Detaching never stops the container; several clients
// may attach at once.
func (m *Manager) Attach(ctx context.Context, id string, in io.Reader, out, errw io.Writer, tty bool, resize <-chan TerminalSize) error {
	c, v, err := m.running(id)
	if err != nil {
		return err
	}
	if !c.config.GetStdin() {
		in = nil
	}
	var sizes chan [2]uint16
	if resize != nil && c.config.GetTty() {
		sizes = make(chan [2]uint16, 4)
		go func() {
			defer close(sizes)
			for s := range resize {
				sizes <- [2]uint16{s.Width, s.Height}
			}
		}()
	}
	if err := m.monitorClient(v.SandboxID).Attach(ctx, v.ID, in, out, errw, sizes); err != nil {
		return fmt.Errorf("container %s: attach: %w", v.ID, err)
	}
	return nil
}
