package network

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/huskrt/husk/internal/testutil"
)

func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// A pinned namespace of its own with lo up, a port-forward dial into it,
// the pin of a namespace a process made, and removal (twice is fine).
func TestNetnsLifecycle(t *testing.T) {
	testutil.RequiresRoot(t, "network namespaces, bind mounts")
	nsenter := testutil.RequiresCommand(t, "nsenter")
	m, err := New(Options{ConfDir: t.TempDir(), CacheDir: t.TempDir(), NetnsDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	host := nsInode(t, "/proc/self/ns/net")
	pin, err := m.CreateNetns("a")
	if err != nil {
		t.Fatalf("CreateNetns: %v", err)
	}
	t.Cleanup(func() { _ = m.RemoveNetns(pin) })
	if pin != filepath.Join(m.opts.NetnsDir, "a") || nsInode(t, pin) == host {
		t.Fatalf("pin %s is the host's namespace or misplaced", pin)
	}
	if _, err := m.CreateNetns("a"); err == nil {
		t.Error("a second CreateNetns for the same sandbox succeeded")
	}

	// A listener in the namespace (lo is up, or it could not bind), and a
	// dial to it from here: the connection is in the pod's namespace.
	srv := exec.Command(nsenter, "--net="+pin, "--", os.Args[0], "-test.run=^TestHelperEchoServer$")
	srv.Env = append(os.Environ(), "HUSK_ECHO_SERVER=127.0.0.1:7777")
	out, _ := srv.StdoutPipe()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	ready := make([]byte, 6)
	if _, err := io.ReadFull(out, ready); err != nil || string(ready) != "ready\n" {
		t.Fatalf("echo server in the namespace: %q, %v", ready, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := DialInNetns(ctx, pin, 7777)
	if err != nil {
		t.Fatalf("DialInNetns: %v", err)
	}
	if _, err := fmt.Fprintln(c, "hello"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 6)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "hello\n" {
		t.Errorf("echo through DialInNetns: %q, %v", got, err)
	}
	c.Close()
	if _, err := DialInNetns(ctx, pin, 7778); err == nil {
		t.Error("DialInNetns to a port nothing listens on succeeded")
	}

	// PinNetns pins the namespace a process is in.
	p2, err := m.PinNetns("b", srv.Process.Pid)
	if err != nil {
		t.Fatalf("PinNetns: %v", err)
	}
	if nsInode(t, p2) != nsInode(t, pin) {
		t.Error("PinNetns pinned another namespace than the process's")
	}
	for _, p := range []string{p2, pin, pin} {
		if err := m.RemoveNetns(p); err != nil {
			t.Errorf("RemoveNetns(%s): %v", p, err)
		}
	}
	if nsInode(t, "/proc/self/task/"+strconv.Itoa(os.Getpid())+"/ns/net") != host {
		t.Error("the main thread left the host's namespace")
	}
}

// TestHelperEchoServer is the echo server TestNetnsLifecycle runs inside
// the namespace; it does nothing in a normal run.
func TestHelperEchoServer(t *testing.T) {
	addr := os.Getenv("HUSK_ECHO_SERVER")
	if addr == "" {
		return
	}
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready")
	for {
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		go func() { _, _ = io.Copy(c, c); c.Close() }()
	}
}
