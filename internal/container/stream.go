package container

import (
	"context"
	"fmt"
	"io"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
)

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
// may attach at once. Resizes go to the monitor as they come, for a
// container with a terminal.
func (m *Manager) Attach(ctx context.Context, id string, in io.Reader, out, errw io.Writer, tty bool, resize <-chan remotecommand.TerminalSize) error {
	c, v, err := m.running(id)
	if err != nil {
		return err
	}
	if !c.config.GetStdin() {
		in = nil
	}
	if !c.config.GetTty() {
		resize = nil
	}
	if err := m.monitorClient(v.SandboxID).Attach(ctx, v.ID, in, out, errw, resize); err != nil {
		return fmt.Errorf("container %s: attach: %w", v.ID, err)
	}
	return nil
}
