package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/huskrt/husk/internal/monitor/proto"
)

// attachWriteTimeout drops an attached client that does not read: the
// container's output must never wait for it.
const attachWriteTimeout = 2 * time.Second

// attachment is one attached client.
type attachment struct {
	conn *net.UnixConn
	mu   sync.Mutex // one frame at a time
}

// fanout copies a stream's output to every attached client.
type fanout struct {
	c    *container
	kind byte
}

func (f fanout) Write(p []byte) (int, error) {
	f.c.attachMu.Lock()
	list := make([]*attachment, 0, len(f.c.attached))
	for a := range f.c.attached {
		list = append(list, a)
	}
	f.c.attachMu.Unlock()
	for _, a := range list {
		a.mu.Lock()
		_ = a.conn.SetWriteDeadline(time.Now().Add(attachWriteTimeout))
		err := proto.WriteFrame(a.conn, f.kind, p)
		a.mu.Unlock()
		if err != nil {
			f.c.detach(a)
			a.conn.Close()
		}
	}
	return len(p), nil
}

func (c *container) detach(a *attachment) {
	c.attachMu.Lock()
	delete(c.attached, a)
	c.attachMu.Unlock()
}

// closeAttachments ends every attached client once the output ended.
func (c *container) closeAttachments() {
	c.attachMu.Lock()
	list := c.attached
	c.attached = map[*attachment]struct{}{}
	c.attachMu.Unlock()
	for a := range list {
		a.conn.Close()
	}
}

// attach serves one attached client until it goes away, ends its stdin,
// or the container's output ends.
func (m *monitor) attach(conn *net.UnixConn, r io.Reader, id string) {
	c := m.get(id)
	if c == nil {
		_ = json.NewEncoder(conn).Encode(unknown(id))
		return
	}
	select {
	case <-c.exited:
		_ = json.NewEncoder(conn).Encode(failWith(proto.CodeFailedPrecondition, fmt.Errorf("container %s has exited", id)))
		return
	default:
	}
	a := &attachment{conn: conn}
	// No trailing newline: the frames follow the answer directly.
	if _, err := conn.Write([]byte("{}")); err != nil {
		return
	}
	c.attachMu.Lock()
	c.attached[a] = struct{}{}
	c.attachMu.Unlock()
	defer c.detach(a)

	sentStdin := false
	buf := make([]byte, 32<<10)
	for {
		kind, n, err := proto.ReadFrameHeader(r)
		if err != nil {
			break
		}
		if n > uint32(len(buf)) {
			break // not a client of ours
		}
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			break
		}
		switch kind {
		case proto.FrameStdin:
			sentStdin = true
			c.writeStdin(buf[:n])
		case proto.FrameStdinClose:
			if !c.stdinOnce || c.tty {
				// Only this client's input ended: so does its session
				// (serve closes the connection), and the container's
				// stdin stays open for the next client. containerd does
				// the same (internal/cri/io/container_io.go, Attach),
				// for a terminal with stdin_once too.
				return
			}
			c.closeStdin()
		case proto.FrameResize:
			if w, h, ok := proto.ParseResize(buf[:n]); ok {
				c.resize(w, h)
			}
		}
	}
	if sentStdin && c.stdinOnce {
		c.closeStdin()
	}
}

// input is the container's stdin, nil without one or once closed.
func (c *container) input() *os.File {
	c.attachMu.Lock()
	defer c.attachMu.Unlock()
	return c.stdin
}

// writeStdin writes a client's input to the container's stdin. A pipe
// whose reader is gone is closed for good.
func (c *container) writeStdin(p []byte) {
	in := c.input()
	if in == nil {
		return
	}
	if _, err := in.Write(p); err != nil {
		c.closeStdin()
	}
}

// resize sets the size of the container's terminal. Through the raw
// conn: Fd would put the master, which the output copy reads, in blocking
// mode.
func (c *container) resize(width, height uint16) {
	in := c.input()
	if !c.tty || in == nil {
		return
	}
	rc, err := in.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Col: width, Row: height})
	})
}

// closeStdin closes the container's stdin pipe; never a terminal's
// master, which carries the output too.
func (c *container) closeStdin() {
	if !c.tty {
		c.releaseStdin()
	}
}

// releaseStdin closes the container's stdin, a terminal's master
// included: once the container is forgotten.
func (c *container) releaseStdin() {
	c.attachMu.Lock()
	in := c.stdin
	c.stdin = nil
	c.attachMu.Unlock()
	if in != nil {
		in.Close()
	}
}
