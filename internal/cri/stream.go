package cri

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
	remotecommandserver "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"github.com/huskrt/husk/internal/container"
	"github.com/huskrt/husk/internal/network"
	"github.com/huskrt/husk/internal/sandbox"
)

// StreamOptions configure the streaming server (Exec, Attach, PortForward).
type StreamOptions struct {
	// Address and Port to listen on; port 0 picks a free one.
	Address string
	Port    int
	// TLS, when set, serves https.
	TLS *tls.Config
	// Logger gets a line when each session starts and ends.
	Logger *slog.Logger
	// Sessions, when set, counts the sessions.
	Sessions SessionRecorder
}

// SessionRecorder counts streaming sessions by kind: exec, attach,
// portforward (internal/metrics).
type SessionRecorder interface {
	SessionStarted(kind string) (ended func(time.Duration))
}

// StreamServer is the streaming server of k8s.io/cri-streaming (the one
// containerd and CRI-O use) over husk's containers and sandboxes.
type StreamServer struct {
	srv      streaming.Server
	http     *http.Server
	listener net.Listener
}

// NewStreamServer listens and builds the server; Serve serves it.
func NewStreamServer(o StreamOptions, containers *container.Manager, sandboxes *sandbox.Manager) (*StreamServer, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(o.Address, strconv.Itoa(o.Port)))
	if err != nil {
		return nil, fmt.Errorf("streaming server: %w", err)
	}
	cfg := streaming.DefaultConfig
	cfg.Addr = l.Addr().String()
	cfg.TLSConfig = o.TLS
	scheme := "http"
	if o.TLS != nil {
		scheme = "https"
	}
	cfg.BaseURL = &url.URL{Scheme: scheme, Host: l.Addr().String()}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	srv, err := streaming.NewServer(cfg, &streamRuntime{containers: containers, sandboxes: sandboxes, log: log, sessions: o.Sessions})
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("streaming server: %w", err)
	}
	if o.TLS != nil {
		l = tls.NewListener(l, o.TLS)
	}
	return &StreamServer{srv: srv, listener: l, http: &http.Server{Handler: markWebsocket(srv), ReadHeaderTimeout: 30 * time.Second}}, nil
}

// Addr is where the server listens.
func (s *StreamServer) Addr() string { return s.listener.Addr().String() }

// Serve serves until Close.
func (s *StreamServer) Serve() error {
	if err := s.http.Serve(s.listener); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Close stops the server and its streams.
func (s *StreamServer) Close() error { return s.http.Close() }

// streamRuntime runs what the streaming server's clients ask for.
type streamRuntime struct {
	containers *container.Manager
	sandboxes  *sandbox.Manager
	log        *slog.Logger
	sessions   SessionRecorder
}

// session logs that a session of kind starts and returns what logs (and
// counts) its end. The exec'd command is not logged: its arguments may
// carry a secret (a password on a command line).
func (r *streamRuntime) session(kind string, attrs ...slog.Attr) func(err error, end ...slog.Attr) {
	start := time.Now()
	ended := func(time.Duration) {}
	if r.sessions != nil {
		ended = r.sessions.SessionStarted(kind)
	}
	attrs = append(attrs, slog.String("kind", kind))
	r.log.LogAttrs(context.Background(), slog.LevelInfo, "stream session started", attrs...)
	return func(err error, end ...slog.Attr) {
		d := time.Since(start)
		ended(d)
		a := slices.Concat(attrs, end, []slog.Attr{slog.Duration("duration", d)})
		if err != nil {
			a = append(a, slog.String("error", err.Error()))
		}
		r.log.LogAttrs(context.Background(), slog.LevelInfo, "stream session ended", a...)
	}
}

func (r *streamRuntime) Exec(ctx context.Context, id string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommandserver.TerminalSize) error {
	done := r.session("exec", slog.String("container_id", id), slog.Bool("tty", tty))
	err := r.containers.Exec(ctx, id, cmd, in, writer(out), writer(errw), tty, resize)
	var exit *container.ExitError
	if errors.As(err, &exit) {
		done(nil, slog.Int("exit_code", int(exit.Code)))
		// The streaming server reports exit codes for this type only.
		return utilexec.CodeExitError{Err: err, Code: exit.Code}
	}
	if err == nil {
		done(nil, slog.Int("exit_code", 0))
	} else {
		done(err)
	}
	return err
}

func (r *streamRuntime) Attach(ctx context.Context, id string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommandserver.TerminalSize) (err error) {
	done := r.session("attach", slog.String("container_id", id), slog.Bool("tty", tty))
	defer func() { done(err) }()
	return r.containers.Attach(ctx, id, stdin(ctx, in), writer(out), writer(errw), tty, resize)
}

func (r *streamRuntime) PortForward(ctx context.Context, sandboxID string, port int32, stream io.ReadWriteCloser) (err error) {
	ended := r.session("portforward", slog.String("pod_sandbox_id", sandboxID), slog.Int("port", int(port)))
	defer func() { ended(err) }()
	defer stream.Close()
	rec, _, err := r.sandboxes.Get(sandboxID)
	if err != nil {
		return err
	}
	if rec.State != sandbox.StateReady {
		return fmt.Errorf("pod sandbox %s is not ready: %w", rec.ID, errdefs.ErrFailedPrecondition)
	}
	var conn net.Conn
	if rec.NetnsPath == "" {
		// A host-network pod listens in the node's namespace.
		var d net.Dialer
		conn, err = d.DialContext(ctx, "tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	} else {
		conn, err = network.DialInNetns(ctx, rec.NetnsPath, port)
	}
	if err != nil {
		return fmt.Errorf("pod sandbox %s: port %d: %w", rec.ID, port, err)
	}
	defer conn.Close()
	// A connection that breaks is the forwarded connection's end, not an
	// error of the forward: kubectl ends every forwarded port when one
	// reports an error.
	_ = forward(ctx, stream, conn)
	return nil
}

// writer turns a possibly nil WriteCloser into a nil io.Writer.
func writer(w io.WriteCloser) io.Writer {
	if w == nil {
		return nil
	}
	return w
}

func (s *RuntimeServer) Exec(_ context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	if err := s.opts.Containers.Running(req.GetContainerId()); err != nil {
		return nil, toStatus(err)
	}
	resp, err := s.opts.Stream.srv.GetExec(req)
	if err != nil {
		return nil, toStatus(fmt.Errorf("exec: %v: %w", err, errdefs.ErrInvalidArgument))
	}
	return resp, nil
}

func (s *RuntimeServer) Attach(_ context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	if err := s.opts.Containers.Running(req.GetContainerId()); err != nil {
		return nil, toStatus(err)
	}
	resp, err := s.opts.Stream.srv.GetAttach(req)
	if err != nil {
		return nil, toStatus(fmt.Errorf("attach: %v: %w", err, errdefs.ErrInvalidArgument))
	}
	return resp, nil
}

func (s *RuntimeServer) PortForward(_ context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	rec, _, err := s.opts.Sandboxes.Get(req.GetPodSandboxId())
	if err != nil {
		return nil, toStatus(err)
	}
	if rec.State != sandbox.StateReady {
		return nil, toStatus(fmt.Errorf("pod sandbox %s is not ready: %w", rec.ID, errdefs.ErrFailedPrecondition))
	}
	resp, err := s.opts.Stream.srv.GetPortForward(req)
	if err != nil {
		return nil, toStatus(fmt.Errorf("port-forward: %v: %w", err, errdefs.ErrInvalidArgument))
	}
	return resp, nil
}
