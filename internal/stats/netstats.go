package stats

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/huskrt/husk/internal/netns"
)

// Interface is one network interface's counters.
type Interface struct {
	Name                                    string
	RxBytes, RxPackets, RxErrors, RxDropped uint64
	TxBytes, TxPackets, TxErrors, TxDropped uint64
}

// ReadNetworkOf returns the counters of every interface except "lo" in
// the network namespace pinned at netnsPath, read through pid, a process
// in that namespace (the pod's infra). /proc/<pid>/net/dev shows the
// namespace its process had when it was opened: it is opened once, after
// and before checking that namespace against the pin (so a reused PID is
// never read), and kept open (rawfile.go) until ForgetNetwork, a pread a
// call instead of two setns calls on a locked thread. When the process is
// not in the pinned namespace, ReadNetwork reads through the pin itself.
func (r *Reader) ReadNetworkOf(pid int, netnsPath string) ([]Interface, error) {
	if pid <= 0 {
		return ReadNetwork(netnsPath)
	}
	buf := bufs.Get().(*[]byte)
	defer bufs.Put(buf)
	g := r.files.acquire(netKey(netnsPath))
	data, err := readNetDevOf(&reader{g: g, buf: *buf}, pid, netnsPath)
	g.release()
	if err != nil {
		r.ForgetNetwork(netnsPath)
		return ReadNetwork(netnsPath)
	}
	ifs, err := parseNetDev(data)
	if err != nil {
		return nil, fmt.Errorf("netns %s: parse net/dev: %w", netnsPath, err)
	}
	return withoutLoopback(ifs), nil
}

// ForgetNetwork closes the file kept open to read the pinned namespace
// at netnsPath: it holds the namespace, so the pod's stop must close it.
func (r *Reader) ForgetNetwork(netnsPath string) { r.files.forget(netKey(netnsPath)) }

func netKey(netnsPath string) string { return "netns:" + netnsPath }

// errOtherNetns: pid is not in the pinned namespace.
var errOtherNetns = errors.New("process not in the pinned network namespace")

// readNetDevOf reads pid's net/dev through rd, opening it (when rd keeps
// no open copy) only between two checks that pid is in the pinned
// namespace.
func readNetDevOf(rd *reader, pid int, netnsPath string) ([]byte, error) {
	proc := "/proc/" + strconv.Itoa(pid)
	path, ns := proc+"/net/dev", proc+"/ns/net"
	if rd.g != nil {
		if _, ok := rd.g.fds[path]; ok {
			return rd.read(path)
		}
	}
	if !sameFile(netnsPath, ns) {
		return nil, errOtherNetns
	}
	data, err := rd.read(path)
	if err != nil {
		return nil, err
	}
	if !sameFile(netnsPath, ns) { // the PID was reused meanwhile
		if rd.g != nil {
			unix.Close(rd.g.fds[path])
			delete(rd.g.fds, path)
		}
		return nil, errOtherNetns
	}
	return data, nil
}

// sameFile reports whether a and b are the same inode (for nsfs files,
// the same namespace).
func sameFile(a, b string) bool {
	var sa, sb unix.Stat_t
	if unix.Stat(a, &sa) != nil || unix.Stat(b, &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

func withoutLoopback(ifs []Interface) []Interface {
	out := ifs[:0]
	for _, i := range ifs {
		if i.Name != "lo" {
			out = append(out, i)
		}
	}
	return out
}

// ReadNetwork returns the counters of every interface except "lo" in the
// network namespace pinned at netnsPath (a bind-mounted nsfs file such as
// /run/netns/x). The read runs on a thread of its own inside that
// namespace (internal/netns); the caller's thread never changes namespace.
func ReadNetwork(netnsPath string) ([]Interface, error) {
	var data []byte
	err := netns.Run(netnsPath, func() error {
		// /proc/self/net follows the thread-group leader's namespace, not
		// this thread's; thread-self follows this thread.
		var err error
		if data, err = os.ReadFile("/proc/thread-self/net/dev"); err != nil {
			return fmt.Errorf("netns %s: %w", netnsPath, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	ifs, err := parseNetDev(data)
	if err != nil {
		return nil, fmt.Errorf("netns %s: parse net/dev: %w", netnsPath, err)
	}
	return withoutLoopback(ifs), nil
}

// parseNetDev parses the /proc/net/dev format: two header lines, then one
// "name: 8 receive counters 8 transmit counters" line per interface. It
// walks the bytes in place (each pod's file is parsed on every stats call).
func parseNetDev(b []byte) ([]Interface, error) {
	var ifs []Interface
	for n := 1; len(b) > 0; n++ {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		// Interface names cannot contain ':' (but may contain '|'), so ':'
		// both marks an interface line and ends its name.
		name, counters, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			if bytes.Contains(line, []byte{'|'}) || len(bytes.TrimSpace(line)) == 0 {
				continue // header
			}
			return nil, fmt.Errorf("line %d: no interface name", n)
		}
		name = bytes.TrimSpace(name)
		if len(name) == 0 {
			return nil, fmt.Errorf("line %d: no interface name", n)
		}
		v, err := netDevCounters(counters)
		if err != nil {
			return nil, fmt.Errorf("line %d (%s): %w", n, name, err)
		}
		ifs = append(ifs, Interface{Name: string(name), RxBytes: v[0], RxPackets: v[1], RxErrors: v[2], RxDropped: v[3],
			TxBytes: v[4], TxPackets: v[5], TxErrors: v[6], TxDropped: v[7]})
	}
	return ifs, nil
}

// netDevSlot is where each of an interface's 16 counters goes in what
// netDevCounters returns: bytes, packets, errors and drops received
// (columns 0-3), then sent (8-11); -1 for the counters CRI does not carry.
var netDevSlot = [16]int{0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7, -1, -1, -1, -1}

// netDevCounters reads the 16 counters of an interface's line and returns
// those CRI carries, in netDevSlot's order.
func netDevCounters(counters []byte) ([8]uint64, error) {
	var v [8]uint64
	col := 0
	for f := range bytes.FieldsSeq(counters) {
		if col < len(netDevSlot) && netDevSlot[col] >= 0 {
			x, err := strconv.ParseUint(string(f), 10, 64)
			if err != nil {
				return v, err
			}
			v[netDevSlot[col]] = x
		}
		col++
	}
	if col < len(netDevSlot) {
		return v, fmt.Errorf("%d counters, want 16", col)
	}
	return v, nil
}
