package main

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestNotifier(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	n := newNotifier()
	if v, ok := os.LookupEnv("NOTIFY_SOCKET"); ok {
		t.Errorf("NOTIFY_SOCKET still set (%q): huskd's children would inherit it", v)
	}
	for _, tt := range []struct {
		send func() error
		want string
	}{{n.ready, "READY=1"}, {n.stopping, "STOPPING=1"}} {
		if err := tt.send(); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		k, err := conn.Read(buf)
		if err != nil || string(buf[:k]) != tt.want {
			t.Errorf("received %q, %v; want %q", buf[:k], err, tt.want)
		}
	}
}

// Without NOTIFY_SOCKET (not under systemd) nothing is sent and nothing fails.
func TestNotifierWithoutSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	os.Unsetenv("NOTIFY_SOCKET")
	n := newNotifier()
	if err := n.ready(); err != nil {
		t.Error(err)
	}
	if err := n.stopping(); err != nil {
		t.Error(err)
	}
}

// A socket that is gone is an error to log, not a crash.
func TestNotifierSocketGone(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone"))
	if err := newNotifier().ready(); err == nil {
		t.Error("no error for a missing socket")
	}
}
