package stats

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// swapCheck is how long whether the node has swap space is trusted:
// swapon and swapoff are rare, and a stale answer only delays the first
// nonzero swap figure by this much.
const swapCheck = 10 * time.Second

// swapDevices says whether the node has any swap space (/proc/swaps lists
// a device or file), checked again every swapCheck.
type swapDevices struct {
	mu      sync.Mutex // guards has and checked
	has     bool
	checked time.Time
}

func (s *swapDevices) any(proc string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := time.Now(); now.Sub(s.checked) > swapCheck {
		b, err := os.ReadFile(filepath.Join(proc, "swaps"))
		// A header line, then one line per active swap area; unreadable
		// means unknown: read the cgroup's figures.
		s.has = err != nil || bytes.Count(bytes.TrimSpace(b), []byte{'\n'}) > 0
		s.checked = now
	}
	return s.has
}
