package main

import (
	"fmt"
	"net"
	"os"

	systemd "github.com/coreos/go-systemd/v22/daemon"
)

// notifier tells systemd (Type=notify) that huskd is ready or stopping. It
// takes NOTIFY_SOCKET once, at start, and removes it from the environment:
// huskd's children (runc, crun, the monitors that run them, CNI plugins)
// must not inherit it, since a runtime that sees NOTIFY_SOCKET hands a
// notify socket to the container and waits on it. go-systemd's SdNotify
// reads the variable at each call, so the datagram is sent here, to the
// address taken at start, with go-systemd's states.
type notifier struct {
	addr string // empty: not under systemd, nothing is sent
}

func newNotifier() *notifier {
	n := &notifier{addr: os.Getenv("NOTIFY_SOCKET")}
	os.Unsetenv("NOTIFY_SOCKET")
	return n
}

func (n *notifier) ready() error    { return n.send(systemd.SdNotifyReady) }
func (n *notifier) stopping() error { return n.send(systemd.SdNotifyStopping) }

func (n *notifier) send(state string) error {
	if n.addr == "" {
		return nil
	}
	// An address starting with @ is an abstract socket; net handles it.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify %s: %w", state, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify %s: %w", state, err)
	}
	return nil
}
