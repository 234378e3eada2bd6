package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/huskrt/husk/internal/monitor/proto"
)

// containerIO is a container's stdio while the runtime creates it: the
// ends the runtime gets, and the ends this process keeps.
type containerIO struct {
	stdio   [3]uintptr // the runtime's fds 0, 1 and 2
	child   []*os.File // the files behind stdio: closed once the runtime started
	readers []*os.File // ours: stdout and stderr, or the terminal's master
	stdin   *os.File   // ours: stdin's write end, or the terminal's master
	master  *os.File   // a terminal's master, once the runtime sent it
	console *consoleSocket
}

// openStdio makes the container's stdio: /dev/null for what it does not
// have, pipes for stdin, stdout and stderr, or a console socket the
// runtime sends the terminal's master through.
func (m *monitor) openStdio(cr *proto.Create) (*containerIO, error) {
	cio := &containerIO{}
	devNull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	cio.child = append(cio.child, devNull)
	cio.stdio = [3]uintptr{devNull.Fd(), devNull.Fd(), devNull.Fd()}
	if cr.Tty {
		// In the monitor's short dir: socket paths are limited to 108 bytes.
		short := cr.ID
		if len(short) > 16 {
			short = short[:16]
		}
		cio.console, err = listenConsole(filepath.Join(m.dir, "tty-"+short+".sock"))
		if err != nil {
			cio.close()
			return nil, err
		}
		return cio, nil
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		cio.close()
		return nil, err
	}
	cio.readers, cio.child = append(cio.readers, outR), append(cio.child, outW)
	errR, errW, err := os.Pipe()
	if err != nil {
		cio.close()
		return nil, err
	}
	cio.readers, cio.child = append(cio.readers, errR), append(cio.child, errW)
	cio.stdio[1], cio.stdio[2] = outW.Fd(), errW.Fd()
	if cr.Stdin {
		inR, inW, err := os.Pipe()
		if err != nil {
			cio.close()
			return nil, err
		}
		cio.stdin, cio.child = inW, append(cio.child, inR)
		cio.stdio[0] = inR.Fd()
	}
	return cio, nil
}

// closeChild closes this process's copies of the runtime's ends.
func (cio *containerIO) closeChild() {
	for _, f := range cio.child {
		f.Close()
	}
	cio.child = nil
}

// useMaster makes a terminal's master the container's output and input.
func (cio *containerIO) useMaster(master *os.File) {
	cio.master = master
	cio.readers = append(cio.readers, master)
	cio.stdin = master
}

// close closes every end, after a failed create.
func (cio *containerIO) close() {
	cio.closeChild()
	for _, f := range cio.readers {
		f.Close()
	}
	if cio.stdin != nil && cio.stdin != cio.master {
		cio.stdin.Close()
	}
	if cio.console != nil {
		cio.console.close()
	}
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
