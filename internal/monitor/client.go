// Package monitor starts husk-monitor processes (one per pod sandbox) and
// talks to them. The monitor is the parent of the pod's app containers; see
// cmd/husk-monitor.
package monitor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"

	"github.com/huskrt/husk/internal/monitor/proto"
)

// ErrGone means no monitor answers in the directory: it was never started,
// exited, or was killed.
var ErrGone = errors.New("monitor not running")

// errUnreached is an ErrGone of a request that was never sent: nothing
// answered the dial.
var errUnreached = errors.New("no monitor listens")

// Unreached tells an error of a request no monitor received (nothing
// listens in its directory), which may be sent again to a monitor
// started anew, from one that died with the request open.
func Unreached(err error) bool { return errors.Is(err, errUnreached) }

// Error is a monitor's answer to a request that failed. It unwraps to the
// errdefs class of its code (errdefs.ErrNotFound for a container the
// monitor does not know), so callers test the class, never the message.
type Error struct {
	Op   string
	Code proto.Code
	Msg  string
}

func (e *Error) Error() string { return "monitor " + e.Op + ": " + e.Msg }

// Unwrap is the errdefs class of the code; nil for the empty code.
func (e *Error) Unwrap() error { return codeClass[e.Code] }

// codeClass maps the protocol's codes to errdefs classes.
var codeClass = map[proto.Code]error{
	proto.CodeNotFound:           errdefs.ErrNotFound,
	proto.CodeAlreadyExists:      errdefs.ErrAlreadyExists,
	proto.CodeFailedPrecondition: errdefs.ErrFailedPrecondition,
	proto.CodeInvalidArgument:    errdefs.ErrInvalidArgument,
}

// responseError is the error of a failed answer; nil when it succeeded.
func responseError(op string, resp *proto.Response) error {
	if resp.Error == "" {
		return nil
	}
	return &Error{Op: op, Code: resp.Code, Msg: resp.Error}
}

// Dir is the directory of the monitor of sandbox sandboxID under a state
// dir. It is short: it holds unix sockets, whose paths are limited to 108
// bytes; 64 bits of the random sandbox ID are unique enough on a node.
func Dir(stateDir, sandboxID string) string {
	if len(sandboxID) > 16 {
		sandboxID = sandboxID[:16]
	}
	return filepath.Join(stateDir, "monitors", sandboxID)
}

// Client talks to the monitor in one directory.
type Client struct {
	dir string
}

// For returns the client of the monitor in dir, running or not.
func For(dir string) *Client { return &Client{dir: dir} }

// Dir is the monitor's directory.
func (c *Client) Dir() string { return c.dir }

// Reaper reaps the monitors huskd starts (proc.Watcher): one loop waits
// for all of them, where exec.Cmd.Wait would hold a thread blocked in
// waitid for each pod's whole life.
type Reaper interface {
	ReapChild(pid int) error
}

// Ensure starts the monitor in dir unless one already answers there, and
// returns once it accepts requests. reaper reaps it when it ends (nil: a
// goroutine waits for it).
func Ensure(ctx context.Context, binary, dir string, reaper Reaper) (*Client, error) {
	c := For(dir)
	if err := c.Ping(ctx); err == nil {
		return c, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("monitor dir: %w", err)
	}
	logf, err := os.OpenFile(filepath.Join(dir, "monitor.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("monitor log: %w", err)
	}
	defer logf.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer readyR.Close()
	cmd := exec.Command(binary, "-dir", dir)
	cmd.Env = []string{"GOMAXPROCS=1", "PATH=" + os.Getenv("PATH")}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{readyW}
	// Its own session: no terminal signal or process-group kill of huskd
	// reaches the pod's containers through it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		readyW.Close()
		return nil, fmt.Errorf("start monitor %s: %w", binary, err)
	}
	readyW.Close()
	// huskd is its parent until huskd restarts: reap it when it ends. The
	// handle is released only on return, so the kill below still works.
	if reaper == nil || reaper.ReapChild(cmd.Process.Pid) != nil {
		go func() { _ = cmd.Wait() }()
	} else {
		defer cmd.Process.Release()
	}
	ready := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, readyR)
		ready <- err
	}()
	select {
	case <-ready:
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("start monitor: %w", ctx.Err())
	}
	if err := c.Ping(ctx); err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "monitor.log"))
		return nil, fmt.Errorf("monitor did not start: %w: %s", err, b)
	}
	return c, nil
}

func (c *Client) call(ctx context.Context, req *proto.Request) (*proto.Response, error) {
	conn, err := c.send(ctx, req)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	resp, err := receive(conn, req.Op)
	// A read cut by ctx is ctx's error, not a monitor gone.
	if errors.Is(err, ErrGone) && ctx.Err() != nil {
		return nil, fmt.Errorf("monitor %s: %w", req.Op, ctx.Err())
	}
	return resp, err
}

// send dials the monitor and writes req; the caller reads the answer and
// closes the connection.
func (c *Client) send(ctx context.Context, req *proto.Request) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", filepath.Join(c.dir, proto.SocketName))
	if err != nil {
		return nil, fmt.Errorf("%w: %w: %w", ErrGone, errUnreached, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		conn.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("monitor %s: %w", req.Op, ctx.Err())
		}
		return nil, fmt.Errorf("monitor %s: %w", req.Op, err)
	}
	return conn, nil
}

// receive reads the answer to a request of operation op.
func receive(conn net.Conn, op string) (*proto.Response, error) {
	var resp proto.Response
	if err := json.NewDecoder(conn).Decode(&resp); err != nil {
		// The monitor died with the request open.
		return nil, fmt.Errorf("monitor %s: %w: %w", op, ErrGone, err)
	}
	if err := responseError(op, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Ping checks that the monitor answers.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.call(ctx, &proto.Request{Op: proto.OpPing})
	return err
}

// Create has the monitor create a container through the runtime and
// returns the PID of its init, waiting at the runtime's exec fifo.
func (c *Client) Create(ctx context.Context, cr *proto.Create) (int, error) {
	resp, err := c.call(ctx, &proto.Request{Op: proto.OpCreate, Create: cr})
	if err != nil {
		return 0, err
	}
	return resp.PID, nil
}

// Run has the monitor create and start a container in one runtime call
// and returns the PID of its process. A monitor that predates the run
// operation (started by an older huskd) is asked to create the container,
// and start then has the runtime start it.
func (c *Client) Run(ctx context.Context, cr *proto.Create, start func() error) (int, error) {
	resp, err := c.call(ctx, &proto.Request{Op: proto.OpRun, Create: cr})
	// A complete request is invalid only as an operation the monitor
	// does not know.
	var merr *Error
	if errors.As(err, &merr) && merr.Code == proto.CodeInvalidArgument {
		pid, err := c.Create(ctx, cr)
		if err != nil {
			return 0, err
		}
		return pid, start()
	}
	if err != nil {
		return 0, err
	}
	return resp.PID, nil
}

// StartInfra has the monitor start the pod's infra and stay its parent;
// it returns the infra's PID and, for a direct start, the report of its
// setup (internal/pausesetup.ParseReport reads it).
func (c *Client) StartInfra(ctx context.Context, in *proto.Infra) (int, []byte, error) {
	resp, err := c.call(ctx, &proto.Request{Op: proto.OpInfra, Infra: in})
	if err != nil {
		return 0, nil, err
	}
	return resp.PID, resp.Report, nil
}

// Wait returns once the container has exited and its exit is recorded.
func (c *Client) Wait(ctx context.Context, id string) (*proto.Exit, error) {
	resp, err := c.call(ctx, &proto.Request{Op: proto.OpWait, ID: id})
	if err != nil {
		return nil, err
	}
	return resp.Exit, nil
}

// WaitFunc sends a wait request for the container and returns; done gets
// what Wait would return, once the container has exited, from a goroutine
// of its own that does nothing but read the answer. Parked for the
// container's whole life, that goroutine holds a stack of a few KiB, where
// one parked inside Wait keeps the stack it grew encoding the request; and
// GOGC's headroom is a share of the stacks too.
func (c *Client) WaitFunc(id string, done func(*proto.Exit, error)) {
	req := &proto.Request{Op: proto.OpWait, ID: id}
	conn, err := c.send(context.Background(), req)
	if err != nil {
		done(nil, err)
		return
	}
	go func() {
		resp, err := receive(conn, req.Op)
		conn.Close()
		if err != nil {
			done(nil, err)
			return
		}
		done(resp.Exit, nil)
	}()
}

// Reopen reopens the container's log file.
func (c *Client) Reopen(ctx context.Context, id string) error {
	_, err := c.call(ctx, &proto.Request{Op: proto.OpReopen, ID: id})
	return err
}

// Forget drops an exited container from the monitor.
func (c *Client) Forget(ctx context.Context, id string) error {
	_, err := c.call(ctx, &proto.Request{Op: proto.OpForget, ID: id})
	return err
}

// Shutdown ends the monitor; it refuses while a container runs. A monitor
// already gone is shut down.
func (c *Client) Shutdown(ctx context.Context) error {
	_, err := c.call(ctx, &proto.Request{Op: proto.OpShutdown})
	if errors.Is(err, ErrGone) {
		return nil
	}
	return err
}

// ReadExit reads a container's exit file; ok is false when none exists.
func ReadExit(path string) (e proto.Exit, ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return e, false, nil
	}
	if err != nil {
		return e, false, err
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return e, false, fmt.Errorf("exit file %s: %w", path, err)
	}
	return e, true, nil
}

// Attach connects the client's streams to a running container's stdio
// until the container's output ends, the monitor ends the session once in
// ended (see proto.FrameStdinClose), or ctx is done. in may be nil; out and
// errOut receive the container's stdout and stderr (a nil one discards);
// resize carries terminal sizes, as the streaming server hands them over.
func (c *Client) Attach(ctx context.Context, id string, in io.Reader, out, errOut io.Writer, resize <-chan remotecommand.TerminalSize) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", filepath.Join(c.dir, proto.SocketName))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrGone, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	// No trailing newline: what follows the request are frames.
	b, err := json.Marshal(&proto.Request{Op: proto.OpAttach, ID: id})
	if err != nil {
		return err
	}
	if _, err := conn.Write(b); err != nil {
		return fmt.Errorf("monitor attach: %w", err)
	}
	dec := json.NewDecoder(conn)
	var resp proto.Response
	if err := dec.Decode(&resp); err != nil {
		return fmt.Errorf("monitor attach: %w: %w", ErrGone, err)
	}
	if err := responseError(proto.OpAttach, &resp); err != nil {
		return err
	}
	var wmu sync.Mutex
	send := func(kind byte, p []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		return proto.WriteFrame(conn, kind, p)
	}
	if in != nil {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := in.Read(buf)
				if n > 0 && send(proto.FrameStdin, buf[:n]) != nil {
					return
				}
				if err != nil {
					_ = send(proto.FrameStdinClose, nil)
					return
				}
			}
		}()
	}
	if resize != nil {
		go func() {
			for s := range resize {
				if send(proto.FrameResize, proto.Resize(s.Width, s.Height)) != nil {
					return
				}
			}
		}()
	}
	r := io.MultiReader(dec.Buffered(), conn)
	for {
		kind, n, err := proto.ReadFrameHeader(r)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return nil // the container's output ended
		}
		w := out
		if kind == proto.FrameStderr {
			w = errOut
		}
		if w == nil {
			w = io.Discard
		}
		if _, err := io.CopyN(w, r, int64(n)); err != nil {
			return err
		}
	}
}
