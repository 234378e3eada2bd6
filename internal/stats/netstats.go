package stats

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Interface is one network interface's counters.
type Interface struct {
	Name     string
	RxBytes  uint64
	RxErrors uint64
	TxBytes  uint64
	TxErrors uint64
}

// ReadNetwork returns the counters of every interface except "lo" in the
// network namespace pinned at netnsPath (a bind-mounted nsfs file such as
// /run/netns/x).
//
// setns(CLONE_NEWNET) moves only the calling thread, so the read runs on a
// fresh goroutine locked to its thread; the caller's thread never changes
// namespace. If moving that thread back fails, the goroutine exits still
// locked and the Go runtime discards the thread instead of reusing it.
func ReadNetwork(netnsPath string) ([]Interface, error) {
	ns, err := os.Open(netnsPath)
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", netnsPath, err)
	}
	defer ns.Close()

	type result struct {
		ifs []Interface
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		ifs, restored, err := readNetDevIn(ns)
		if restored {
			runtime.UnlockOSThread()
		}
		done <- result{ifs, err}
	}()
	r := <-done
	if r.err != nil {
		return nil, fmt.Errorf("netns %s: %w", netnsPath, r.err)
	}
	out := r.ifs[:0]
	for _, i := range r.ifs {
		if i.Name != "lo" {
			out = append(out, i)
		}
	}
	return out, nil
}

// readNetDevIn reads the interface counters of namespace ns on the calling
// thread, which must be locked. restored reports whether the thread is back
// in its own namespace and may be unlocked.
func readNetDevIn(ns *os.File) (ifs []Interface, restored bool, err error) {
	own, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, true, fmt.Errorf("open own netns: %w", err)
	}
	defer own.Close()
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("setns: %w", err)
	}
	// /proc/self/net follows the thread group leader's namespace, not this
	// thread's; thread-self follows this thread.
	data, readErr := os.ReadFile("/proc/thread-self/net/dev")
	if err := unix.Setns(int(own.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, false, fmt.Errorf("restore netns: %w", err)
	}
	if readErr != nil {
		return nil, true, fmt.Errorf("read net/dev: %w", readErr)
	}
	ifs, err = parseNetDev(bytes.NewReader(data))
	if err != nil {
		return nil, true, fmt.Errorf("parse net/dev: %w", err)
	}
	return ifs, true, nil
}

// parseNetDev parses the /proc/net/dev format: two header lines, then one
// "name: 8 receive counters 8 transmit counters" line per interface.
func parseNetDev(r io.Reader) ([]Interface, error) {
	var ifs []Interface
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		// Interface names cannot contain ':' (but may contain '|'), so ':'
		// both marks an interface line and ends its name.
		name, counters, ok := strings.Cut(line, ":")
		if !ok {
			if strings.Contains(line, "|") || strings.TrimSpace(line) == "" {
				continue // header
			}
			return nil, fmt.Errorf("line %d: no interface name", n)
		}
		name = strings.TrimSpace(name)
		if name == "" {
			return nil, fmt.Errorf("line %d: no interface name", n)
		}
		f := strings.Fields(counters)
		if len(f) < 16 {
			return nil, fmt.Errorf("line %d (%s): %d counters, want 16", n, name, len(f))
		}
		var v [4]uint64
		for i, col := range []int{0, 2, 8, 10} {
			x, err := strconv.ParseUint(f[col], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("line %d (%s): %w", n, name, err)
			}
			v[i] = x
		}
		ifs = append(ifs, Interface{Name: name, RxBytes: v[0], RxErrors: v[1], TxBytes: v[2], TxErrors: v[3]})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return ifs, nil
}
