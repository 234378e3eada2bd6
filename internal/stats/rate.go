package stats

import (
	"sync"
	"time"
)

// CPURates turns cumulative CPU usage into usage_nano_cores, the CRI's
// average over the sample window: the window is the time since the
// previous call for the same object (a container or a pod), as containerd
// computes it. Objects not asked about for rateTTL are forgotten.
type CPURates struct {
	mu     sync.Mutex // guards last and pruned
	last   map[string]cpuSample
	pruned time.Time
}

type cpuSample struct {
	usage uint64
	at    time.Time
}

const rateTTL = 5 * time.Minute

// NanoCores records the usage of id at a time and returns the average
// rate since the previous record, in nanoseconds of CPU per second; false
// for the first record, or when the counter went backwards (a new cgroup
// under an old ID).
func (r *CPURates) NanoCores(id string, usageNanos uint64, at time.Time) (uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		r.last = map[string]cpuSample{}
	}
	if at.Sub(r.pruned) > time.Minute {
		for k, s := range r.last {
			if at.Sub(s.at) > rateTTL {
				delete(r.last, k)
			}
		}
		r.pruned = at
	}
	prev, ok := r.last[id]
	if ok && !at.After(prev.at) {
		return 0, false // a concurrent, older read: keep the newer sample
	}
	r.last[id] = cpuSample{usage: usageNanos, at: at}
	if !ok || usageNanos < prev.usage {
		return 0, false
	}
	dt := at.Sub(prev.at)
	return uint64(float64(usageNanos-prev.usage) / dt.Seconds()), true
}

// Forget drops what is known of id.
func (r *CPURates) Forget(id string) {
	r.mu.Lock()
	delete(r.last, id)
	r.mu.Unlock()
}
