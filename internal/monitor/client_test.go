package monitor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"

	"github.com/huskrt/husk/internal/monitor/proto"
)

// Attach sends each terminal size it is handed as a resize frame, in
// order, while the container's output comes back. The far end plays the
// monitor's side of the attach protocol (cmd/husk-monitor's attach.go).
func TestAttachSendsResizes(t *testing.T) {
	dir := t.TempDir()
	l, err := net.Listen("unix", filepath.Join(dir, proto.SocketName))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	sizes := []remotecommand.TerminalSize{{Width: 120, Height: 40}, {Width: 80, Height: 24}}
	served := make(chan error, 1)
	go func() { served <- serveAttach(l, len(sizes)) }()

	resize := make(chan remotecommand.TerminalSize)
	defer close(resize)
	go func() {
		for _, s := range sizes {
			resize <- s
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := For(dir).Attach(ctx, "c1", nil, &out, nil, resize); err != nil {
		t.Fatalf("attach: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "120x40 80x24 " {
		t.Errorf("the monitor saw resizes %q, want %q", got, "120x40 80x24 ")
	}
}

// serveAttach accepts one attach, reads n resize frames and echoes each
// as stdout, then ends the output.
func serveAttach(l net.Listener, n int) error {
	conn, err := l.Accept()
	if err != nil {
		return err
	}
	defer conn.Close()
	dec := json.NewDecoder(conn)
	var req proto.Request
	if err := dec.Decode(&req); err != nil || req.Op != proto.OpAttach || req.ID != "c1" {
		return fmt.Errorf("request %+v, %v; want attach of c1", req, err)
	}
	// As the monitor answers: no trailing newline, the frames follow.
	if _, err := conn.Write([]byte("{}")); err != nil {
		return err
	}
	r := io.MultiReader(dec.Buffered(), conn)
	for i := 0; i < n; i++ {
		kind, size, err := proto.ReadFrameHeader(r)
		if err != nil {
			return fmt.Errorf("frame %d: %w", i, err)
		}
		p := make([]byte, size)
		if _, err := io.ReadFull(r, p); err != nil {
			return err
		}
		w, h, ok := proto.ParseResize(p)
		if kind != proto.FrameResize || !ok {
			return fmt.Errorf("frame %d: kind %d %x, want a resize", i, kind, p)
		}
		if err := proto.WriteFrame(conn, proto.FrameStdout, fmt.Appendf(nil, "%dx%d ", w, h)); err != nil {
			return err
		}
	}
	return nil
}

// A real husk-monitor answers each kind of failure with its code, which
// the client turns into the errdefs class: huskd never reads the words.
func TestMonitorErrorCodes(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "husk-monitor")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/huskrt/husk/cmd/husk-monitor").CombinedOutput(); err != nil {
		t.Fatalf("build husk-monitor: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := Ensure(ctx, bin, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}()
	tests := []struct {
		name  string
		call  func() error
		class func(error) bool
	}{
		{"wait for an unknown container", func() error { _, err := c.Wait(ctx, "nosuch"); return err }, errdefs.IsNotFound},
		{"reopen an unknown container's log", func() error { return c.Reopen(ctx, "nosuch") }, errdefs.IsNotFound},
		{"attach to an unknown container", func() error { return c.Attach(ctx, "nosuch", nil, io.Discard, nil, nil) }, errdefs.IsNotFound},
		{"an incomplete create", func() error { _, err := c.Create(ctx, &proto.Create{ID: "x"}); return err }, errdefs.IsInvalidArgument},
		{"an unknown operation", func() error { _, err := c.call(ctx, &proto.Request{Op: "nosuch"}); return err }, errdefs.IsInvalidArgument},
	}
	for _, tt := range tests {
		err := tt.call()
		var merr *Error
		if !tt.class(err) || !errors.As(err, &merr) || merr.Msg == "" {
			t.Errorf("%s: %v (%T), want a *monitor.Error of its class", tt.name, err, err)
		}
	}
	// Forgetting what the monitor does not know succeeds.
	if err := c.Forget(ctx, "nosuch"); err != nil {
		t.Errorf("forget of an unknown container: %v", err)
	}
}

// An answer without a code (a monitor older than the codes, or a failure
// of no class) is an error of no class.
func TestResponseErrorWithoutCode(t *testing.T) {
	err := responseError(proto.OpCreate, &proto.Response{Error: "runtime create failed"})
	if err == nil || errdefs.IsNotFound(err) || errdefs.IsInvalidArgument(err) || err.Error() != "monitor create: runtime create failed" {
		t.Errorf("responseError = %v", err)
	}
	if err := responseError(proto.OpPing, &proto.Response{}); err != nil {
		t.Errorf("a success = %v", err)
	}
}

// Run against a monitor that predates the run operation (it answers an
// unknown op with invalid_argument, as cmd/husk-monitor's handle does)
// creates the container there, then starts it; against one that knows
// run, it is one request. A request to a directory where nothing listens
// is Unreached; one the monitor answered is not.
func TestRunFallsBackToCreateAndStart(t *testing.T) {
	for _, knowsRun := range []bool{true, false} {
		dir := t.TempDir()
		l, err := net.Listen("unix", filepath.Join(dir, proto.SocketName))
		if err != nil {
			t.Fatal(err)
		}
		ops := make(chan string, 4)
		go func() {
			for {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				var req proto.Request
				_ = json.NewDecoder(conn).Decode(&req)
				ops <- req.Op
				resp := proto.Response{PID: 42}
				if req.Op == proto.OpRun && !knowsRun {
					resp = proto.Response{Error: "unknown op \"run\"", Code: proto.CodeInvalidArgument}
				}
				_ = json.NewEncoder(conn).Encode(&resp)
				conn.Close()
			}
		}()
		started := false
		pid, err := For(dir).Run(context.Background(), &proto.Create{ID: "c1"}, func() error { started = true; return nil })
		l.Close()
		close(ops)
		var got []string
		for op := range ops {
			got = append(got, op)
		}
		want, wantStarted := "[run]", false
		if !knowsRun {
			want, wantStarted = "[run create]", true
		}
		if err != nil || pid != 42 || fmt.Sprint(got) != want || started != wantStarted {
			t.Errorf("knows run %v: pid %d, err %v, ops %v, started %v; want 42, nil, %s, %v", knowsRun, pid, err, got, started, want, wantStarted)
		}
		if Unreached(err) {
			t.Errorf("knows run %v: an answered request is Unreached", knowsRun)
		}
	}
	_, err := For(t.TempDir()).Run(context.Background(), &proto.Create{ID: "c1"}, func() error { return nil })
	if !Unreached(err) || !errors.Is(err, ErrGone) {
		t.Errorf("Run where nothing listens = %v, want Unreached and ErrGone", err)
	}
}

// WaitFunc returns once the request is sent; done gets the monitor's
// answer later, the error of a monitor that died with the request open
// (ErrGone, not Unreached), or at once Unreached where nothing listens.
func TestWaitFunc(t *testing.T) {
	type result struct {
		exit *proto.Exit
		err  error
	}
	for _, tt := range []struct {
		name  string
		reply *proto.Response // nil: close without answering
		check func(result) bool
	}{
		{"exit", &proto.Response{Exit: &proto.Exit{Code: 3, At: 7}}, func(r result) bool { return r.err == nil && r.exit.Code == 3 && r.exit.At == 7 }},
		{"not found", &proto.Response{Error: "no such container", Code: proto.CodeNotFound}, func(r result) bool { return errdefs.IsNotFound(r.err) }},
		{"monitor died", nil, func(r result) bool { return errors.Is(r.err, ErrGone) && !Unreached(r.err) }},
	} {
		dir := t.TempDir()
		l, err := net.Listen("unix", filepath.Join(dir, proto.SocketName))
		if err != nil {
			t.Fatal(err)
		}
		answer := make(chan struct{})
		got := make(chan *proto.Request, 1)
		go func() {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
			var req proto.Request
			_ = json.NewDecoder(conn).Decode(&req)
			got <- &req
			<-answer
			if tt.reply != nil {
				_ = json.NewEncoder(conn).Encode(tt.reply)
			}
		}()
		done := make(chan result, 1)
		For(dir).WaitFunc("c1", func(e *proto.Exit, err error) { done <- result{e, err} })
		if req := <-got; req.Op != proto.OpWait || req.ID != "c1" {
			t.Errorf("%s: request %+v, want wait c1", tt.name, req)
		}
		select {
		case r := <-done:
			t.Fatalf("%s: done before the monitor answered: %+v", tt.name, r)
		case <-time.After(50 * time.Millisecond):
		}
		close(answer)
		select {
		case r := <-done:
			if !tt.check(r) {
				t.Errorf("%s: done(%+v, %v)", tt.name, r.exit, r.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: done never called", tt.name)
		}
		l.Close()
	}
	var r result
	For(t.TempDir()).WaitFunc("c1", func(e *proto.Exit, err error) { r = result{e, err} })
	if !Unreached(r.err) {
		t.Errorf("WaitFunc where nothing listens: done(%v), want Unreached at once", r.err)
	}
}

// reapByWait is a Reaper that reaps the child with wait4 in a goroutine,
// and says when it has.
type reapByWait struct{ reaped chan int }

func (r reapByWait) ReapChild(pid int) error {
	go func() {
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(pid, &ws, 0, nil)
		r.reaped <- pid
	}()
	return nil
}

// A monitor that never gets ready before ctx ends is killed, also when a
// Reaper took over reaping it (its handle released too early made the
// kill fail, and the monitor lived on with nobody knowing).
func TestEnsureKillsAMonitorThatIsNotReady(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "never-ready")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := reapByWait{reaped: make(chan int, 1)}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := Ensure(ctx, bin, t.TempDir(), r); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Ensure = %v, want the deadline", err)
	}
	select {
	case <-r.reaped:
	case <-time.After(10 * time.Second):
		t.Fatal("the monitor that never got ready is still running")
	}
}
