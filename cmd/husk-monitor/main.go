// Command husk-monitor is the per-pod monitor: one small process per pod
// sandbox, outside the pod's cgroup, that creates the pod's app containers
// through the OCI runtime and so becomes their parent (it is a child
// subreaper: the runtime's init reparents to it). It copies each
// container's stdout and stderr into its CRI log, records each exit code
// and time durably in the container's exit file, and keeps doing all of
// that while huskd is down or restarting.
//
// huskd talks to it over a unix socket in its directory, one JSON request
// and one JSON answer per connection (see internal/monitor). There is no
// gRPC here and few goroutines: the monitor is paid per pod.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/huskrt/husk/internal/crilog"
	"github.com/huskrt/husk/internal/monitor/proto"
)

var version = "dev"

func main() {
	dir := flag.String("dir", "", "the monitor's directory (socket and log)")
	showVersion := flag.Bool("v", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println("husk-monitor", version)
		return
	}
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "husk-monitor: -dir is required")
		os.Exit(2)
	}
	// A small heap target: the monitor's garbage is log buffers.
	debug.SetGCPercent(50)
	if err := run(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "husk-monitor:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("become child subreaper: %w", err)
	}
	sock := filepath.Join(dir, proto.SocketName)
	_ = os.Remove(sock)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return err
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		return err
	}
	m := &monitor{dir: dir, containers: map[string]*container{}, waiters: map[int]chan unix.WaitStatus{}, unclaimed: map[int]unclaimedStatus{}}
	go m.reap()
	// huskd waits for this fd (its "ready" pipe) to close before it dials.
	if f := os.NewFile(3, "ready"); f != nil {
		f.Close()
	}
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return err
		}
		go m.serve(c, sock)
	}
}

type monitor struct {
	dir        string
	mu         sync.Mutex
	containers map[string]*container
	// waiters get the wait status of a child PID; unclaimed holds
	// statuses reaped before anyone asked (an init that exits before
	// its PID file was read).
	waiters   map[int]chan unix.WaitStatus
	unclaimed map[int]unclaimedStatus
	// infra is the pod's infra once started here (guarded by mu).
	infra *infra
}

type unclaimedStatus struct {
	ws unix.WaitStatus
	at time.Time
}

type container struct {
	id       string
	pid      int
	exitFile string
	log      *crilog.File
	tty      bool
	// stdinOnce closes stdin when the first attached writer leaves.
	stdinOnce bool
	exited    chan struct{}
	exit      proto.Exit

	// attachMu guards attached and stdin. stdin is taken under it and
	// used outside it (input): a write to a full pipe must never hold the
	// lock the output copy takes, and an os.File may be closed while
	// another goroutine writes to it (the write then fails).
	attachMu sync.Mutex
	attached map[*attachment]struct{}
	stdin    *os.File // write end kept for attach (a tty's master); nil without stdin, or once closed
}

// reap is the only place that waits for children: it hands each status to
// whoever registered for the PID, so runtime invocations and container
// inits never steal each other's exit.
func (m *monitor) reap() {
	ch := make(chan os.Signal, 8)
	signal.Notify(ch, unix.SIGCHLD)
	for {
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if err == unix.EINTR {
				continue
			}
			if pid <= 0 || err != nil {
				break
			}
			m.mu.Lock()
			if w, ok := m.waiters[pid]; ok {
				delete(m.waiters, pid)
				w <- ws
			} else {
				m.unclaimed[pid] = unclaimedStatus{ws, time.Now()}
			}
			// Orphans of containers that share the host's PID namespace
			// end up here too; nobody will ask for them.
			for p, u := range m.unclaimed {
				if time.Since(u.at) > time.Minute {
					delete(m.unclaimed, p)
				}
			}
			m.mu.Unlock()
		}
		<-ch
	}
}

// waitFor returns a channel that gets pid's wait status.
func (m *monitor) waitFor(pid int) <-chan unix.WaitStatus {
	ch := make(chan unix.WaitStatus, 1)
	m.mu.Lock()
	defer m.mu.Unlock()
	if u, ok := m.unclaimed[pid]; ok {
		delete(m.unclaimed, pid)
		ch <- u.ws
		return ch
	}
	m.waiters[pid] = ch
	return ch
}

func (m *monitor) serve(c *net.UnixConn, sock string) {
	defer c.Close()
	var req proto.Request
	dec := json.NewDecoder(c)
	if err := dec.Decode(&req); err != nil {
		return
	}
	if req.Op == proto.OpAttach {
		// The frames follow the request; none may sit in the decoder's
		// buffer, so the client waits for the answer before sending.
		m.attach(c, io.MultiReader(dec.Buffered(), c), req.ID)
		return
	}
	resp := m.handle(&req)
	_ = json.NewEncoder(c).Encode(resp)
	if req.Op == proto.OpShutdown && resp.Error == "" {
		_ = os.Remove(sock)
		os.Exit(0)
	}
}

func (m *monitor) handle(req *proto.Request) *proto.Response {
	switch req.Op {
	case proto.OpPing:
		return &proto.Response{}
	case proto.OpCreate, proto.OpRun:
		pid, err := m.create(req.Create, req.Op == proto.OpRun)
		if err != nil {
			return fail(err)
		}
		return &proto.Response{PID: pid}
	case proto.OpInfra:
		pid, report, err := m.startInfra(req.Infra)
		if err != nil {
			return fail(err)
		}
		return &proto.Response{PID: pid, Report: report}
	case proto.OpWait:
		c := m.get(req.ID)
		if c == nil {
			if resp, ok := m.waitInfra(req.ID); ok {
				return resp
			}
			return unknown(req.ID)
		}
		<-c.exited
		e := c.exit
		return &proto.Response{Exit: &e}
	case proto.OpReopen:
		c := m.get(req.ID)
		if c == nil {
			return unknown(req.ID)
		}
		if err := c.log.Reopen(); err != nil {
			return fail(fmt.Errorf("container %s: reopen log: %w", req.ID, err))
		}
		return &proto.Response{}
	case proto.OpForget:
		m.mu.Lock()
		c := m.containers[req.ID]
		delete(m.containers, req.ID)
		m.mu.Unlock()
		if c != nil {
			select {
			case <-c.exited:
			default:
				return failWith(proto.CodeFailedPrecondition, fmt.Errorf("container %s: still running", req.ID))
			}
			c.releaseStdin()
		}
		return &proto.Response{}
	case proto.OpShutdown:
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.infraRunningLocked() {
			return failWith(proto.CodeFailedPrecondition, fmt.Errorf("infra of sandbox %s: still running", m.infra.id))
		}
		for id, c := range m.containers {
			select {
			case <-c.exited:
			default:
				return failWith(proto.CodeFailedPrecondition, fmt.Errorf("container %s: still running", id))
			}
		}
		return &proto.Response{}
	}
	return failWith(proto.CodeInvalidArgument, fmt.Errorf("unknown op %q", req.Op))
}

// coded is a failure with the code that classifies it for huskd.
type coded struct {
	code proto.Code
	err  error
}

func (c *coded) Error() string { return c.err.Error() }
func (c *coded) Unwrap() error { return c.err }

// fail answers a failed request, with the code err carries (none: any
// other failure).
func fail(err error) *proto.Response {
	var c *coded
	if errors.As(err, &c) {
		return &proto.Response{Error: err.Error(), Code: c.code}
	}
	return &proto.Response{Error: err.Error()}
}

func failWith(code proto.Code, err error) *proto.Response {
	return &proto.Response{Error: err.Error(), Code: code}
}

// unknown answers a request about a container this monitor does not know.
func unknown(id string) *proto.Response {
	return failWith(proto.CodeNotFound, fmt.Errorf("container %s: not known to this monitor", id))
}

func (m *monitor) get(id string) *container {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.containers[id]
}
