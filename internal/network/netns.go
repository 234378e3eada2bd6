package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/huskrt/husk/internal/netns"
)

// CreateNetns creates a network namespace for sandbox id, pins it with a
// bind mount at <NetnsDir>/<id> so it outlives every process in it, and
// brings its loopback up (so no loopback plugin needs to run). The work
// runs on a thread of its own that is thrown away (internal/netns).
func (m *Manager) CreateNetns(id string) (string, error) {
	pin, err := m.newPin(id)
	if err != nil {
		return "", err
	}
	err = netns.RunNew(func() error {
		if err := unix.Mount(netns.Self(), pin, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind mount: %w", err)
		}
		return loopbackUp()
	})
	if err != nil {
		return "", undoPin(pin, fmt.Errorf("netns for %s: %w", id, err))
	}
	return pin, nil
}

// newPin makes the empty file a namespace of sandbox id is bound on.
func (m *Manager) newPin(id string) (string, error) {
	if id == "" || strings.ContainsAny(id, "/\x00") || id == "." || id == ".." {
		return "", fmt.Errorf("netns for %q: not a usable name", id)
	}
	pin := filepath.Join(m.opts.NetnsDir, id)
	f, err := os.OpenFile(pin, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return "", fmt.Errorf("netns for %s: create pin: %w", id, err)
	}
	return pin, f.Close()
}

// undoPin removes what a failed pinning left, and returns err.
func undoPin(pin string, err error) error {
	_ = unix.Unmount(pin, unix.MNT_DETACH)
	_ = os.Remove(pin)
	return err
}

// PinNetns pins the network namespace of process pid for sandbox id and
// brings its loopback up. It is for namespaces a pod's infra created
// itself: a pod with its own user namespace needs a network namespace
// owned by that user namespace, or its containers could not join it.
func (m *Manager) PinNetns(id string, pid int) (string, error) {
	pin, err := m.newPin(id)
	if err != nil {
		return "", err
	}
	fail := func(err error) (string, error) {
		return "", undoPin(pin, fmt.Errorf("netns for %s: %w", id, err))
	}
	if err := unix.Mount(fmt.Sprintf("/proc/%d/ns/net", pid), pin, "", unix.MS_BIND, ""); err != nil {
		return fail(fmt.Errorf("bind mount: %w", err))
	}
	if err := netns.Run(pin, loopbackUp); err != nil {
		return fail(err)
	}
	return pin, nil
}

// loopbackUp sets IFF_UP on lo of the calling thread's network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("loopback up: socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback up: get flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback up: set flags: %w", err)
	}
	return nil
}

// RemoveNetns unmounts and removes a pin. A missing pin is already removed.
func (m *Manager) RemoveNetns(path string) error {
	if path == "" {
		return nil
	}
	if err := unix.Unmount(path, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil &&
		!errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount netns %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove netns pin %s: %w", path, err)
	}
	return nil
}

// DialInNetns opens a TCP connection to 127.0.0.1:port inside the network
// namespace pinned at netnsPath (port-forward). A socket belongs to the
// namespace of the thread that created it, and keeps it: the dial runs on
// a thread in the pod's namespace (internal/netns), the connection is
// used from anywhere.
func DialInNetns(ctx context.Context, netnsPath string, port int32) (net.Conn, error) {
	var c net.Conn
	err := netns.Run(netnsPath, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, "tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
		return err
	})
	return c, err
}
