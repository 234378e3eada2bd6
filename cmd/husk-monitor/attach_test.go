package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/huskrt/husk/internal/crilog"
	monclient "github.com/huskrt/husk/internal/monitor"
	"github.com/huskrt/husk/internal/monitor/proto"
)

// testMonitor serves a monitor in a temporary directory, with fake
// containers: pipes stand in for the runtime's stdio, so attach is tested
// without a runtime or root.
type testMonitor struct {
	*monitor
	t *testing.T
}

func newTestMonitor(t *testing.T) *testMonitor {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, proto.SocketName)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	m := &monitor{dir: dir, containers: map[string]*container{}, waiters: map[int]chan unix.WaitStatus{}, unclaimed: map[int]unclaimedStatus{}}
	go func() {
		for {
			c, err := l.AcceptUnix()
			if err != nil {
				return
			}
			go m.serve(c, sock)
		}
	}()
	return &testMonitor{monitor: m, t: t}
}

func (m *testMonitor) client() *monclient.Client { return monclient.For(m.dir) }

// fakeContainer is a container as the monitor sees it, with the far ends
// of its pipes: what the container reads from stdin, and where it writes.
type fakeContainer struct {
	*container
	stdin  *bufio.Reader // the container's end of stdin
	stdout *os.File      // the container's end of stdout
	status chan unix.WaitStatus
	once   sync.Once
}

// add registers a running fake container, as create does once the
// runtime started it.
func (m *testMonitor) add(id string, stdinOnce bool) *fakeContainer {
	t := m.t
	t.Helper()
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	logf, err := crilog.Open(filepath.Join(t.TempDir(), id+".log"))
	if err != nil {
		t.Fatal(err)
	}
	c := &container{id: id, exitFile: filepath.Join(t.TempDir(), "exit.json"), log: logf, stdin: inW,
		stdinOnce: stdinOnce, exited: make(chan struct{}), attached: map[*attachment]struct{}{}}
	f := &fakeContainer{container: c, stdin: bufio.NewReader(inR), stdout: outW, status: make(chan unix.WaitStatus, 1)}
	copying := c.copyOutput([]*os.File{outR}, nil)
	go c.recordExit(f.status, copying)
	m.mu.Lock()
	m.containers[id] = c
	m.mu.Unlock()
	t.Cleanup(func() {
		f.exit()
		<-c.exited
		inR.Close()
		logf.Close()
	})
	return f
}

// exit ends the fake container: its output closes, its init is reaped.
func (f *fakeContainer) exit() {
	f.once.Do(func() {
		f.stdout.Close()
		f.status <- 0
	})
}

// readLine reads what the container got on stdin, with a deadline.
func (f *fakeContainer) readLine(t *testing.T) (string, error) {
	t.Helper()
	type result struct {
		s   string
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := f.stdin.ReadString('\n')
		ch <- result{s, err}
	}()
	select {
	case r := <-ch:
		return r.s, r.err
	case <-time.After(10 * time.Second):
		t.Fatal("the container's stdin got nothing in 10s")
		return "", nil
	}
}

// Several clients attach to one stdin_once container at once, send stdin
// and end it: the first end closes the container's stdin while the others
// still write to it. The field must only be touched under its lock (run
// with -race).
func TestAttachStdinConcurrently(t *testing.T) {
	m := newTestMonitor(t)
	f := m.add("c1", true)
	go func() { _, _ = io.Copy(io.Discard, f.stdin) }() // the container reads its stdin
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			actx, acancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer acancel()
			in := strings.NewReader(strings.Repeat(fmt.Sprintf("line %d\n", i), 100))
			_ = m.client().Attach(actx, "c1", in, io.Discard, io.Discard, nil)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatal("attaches did not end")
	}
}

// A client that ends its stdin ends its attach session, as with
// containerd; the container keeps running with its stdin open for the
// next client. With stdin_once the end of stdin closes the container's
// stdin instead, and the session lasts until the container's output ends.
func TestAttachStdinEnd(t *testing.T) {
	m := newTestMonitor(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	t.Run("stdin", func(t *testing.T) {
		f := m.add("keep", false)
		attach := func(input string) error {
			actx, acancel := context.WithTimeout(ctx, 5*time.Second)
			defer acancel()
			err := m.client().Attach(actx, "keep", strings.NewReader(input), io.Discard, io.Discard, nil)
			if actx.Err() != nil {
				return fmt.Errorf("attach still open 5s after its stdin ended")
			}
			return err
		}
		for _, line := range []string{"echo hi\n", "echo again\n"} {
			if err := attach(line); err != nil {
				t.Fatalf("attach sending %q: %v", line, err)
			}
			if got, err := f.readLine(t); got != line || err != nil {
				t.Fatalf("the container read %q, %v; want %q: its stdin must stay open", got, err, line)
			}
		}
		select {
		case <-f.exited:
			t.Error("the container exited")
		default:
		}
	})

	t.Run("stdin_once", func(t *testing.T) {
		f := m.add("once", true)
		var out syncBuffer
		done := make(chan error, 1)
		go func() { done <- m.client().Attach(ctx, "once", strings.NewReader("last\n"), &out, io.Discard, nil) }()
		if got, err := f.readLine(t); got != "last\n" || err != nil {
			t.Fatalf("the container read %q, %v", got, err)
		}
		if _, err := f.readLine(t); err != io.EOF {
			t.Fatalf("the container's stdin after the client ended it: %v, want EOF", err)
		}
		// The session goes on: output still reaches the client.
		fmt.Fprintln(f.stdout, "after stdin")
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(out.String(), "after stdin") {
			if time.Now().After(deadline) {
				t.Fatalf("output after stdin closed: %q", out.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
		f.exit()
		if err := <-done; err != nil {
			t.Errorf("attach after the container exited: %v", err)
		}
	})
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
