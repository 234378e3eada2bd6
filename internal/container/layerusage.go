package container

import (
	"context"
	"sync"
	"time"

	"github.com/huskrt/husk/internal/stats"
)

// DefaultLayerRefresh is how often the writable layers are measured again
// when Options say nothing: the kubelet's housekeeping period, and
// containerd's snapshot usage sync.
const DefaultLayerRefresh = 10 * time.Second

// layerUsage is one measurement of a writable layer.
type layerUsage struct {
	bytes, inodes uint64
	at            time.Time
}

// writableLayers keeps the usage of each container's writable layer (its
// overlay upper dir). Measuring means walking the tree, so ContainerStats,
// ListContainerStats and ImageFsInfo, which the kubelet polls for every
// container, read the last figure instead: one goroutine walks the layers
// of the live containers again, one after the other, every refresh period
// (refreshLoop). A figure is therefore at most one period plus one round
// of walks old, and says when it was taken. A container whose layer was
// never measured (created or recovered since the last round) is measured
// on the spot, once.
type writableLayers struct {
	mu    sync.Mutex // guards usage
	usage map[string]layerUsage
}

func newWritableLayers() *writableLayers {
	return &writableLayers{usage: map[string]layerUsage{}}
}

// get returns the last figure of the container's layer, measuring it now
// if there is none.
func (w *writableLayers) get(id, dir string) (layerUsage, error) {
	w.mu.Lock()
	u, ok := w.usage[id]
	w.mu.Unlock()
	if ok {
		return u, nil
	}
	return w.measure(id, dir)
}

// measure walks the layer and keeps the figure.
func (w *writableLayers) measure(id, dir string) (layerUsage, error) {
	bytes, inodes, err := stats.DiskUsage(dir)
	if err != nil {
		return layerUsage{}, err
	}
	u := layerUsage{bytes: bytes, inodes: inodes, at: time.Now()}
	w.mu.Lock()
	w.usage[id] = u
	w.mu.Unlock()
	return u, nil
}

// drop forgets a removed container.
func (w *writableLayers) drop(id string) {
	w.mu.Lock()
	delete(w.usage, id)
	w.mu.Unlock()
}

// total adds up every figure; at is the oldest one's time (now when there
// is none), as the CRI's FilesystemUsage wants one timestamp.
func (w *writableLayers) total() layerUsage {
	w.mu.Lock()
	defer w.mu.Unlock()
	t := layerUsage{at: time.Now()}
	for _, u := range w.usage {
		t.bytes += u.bytes
		t.inodes += u.inodes
		if u.at.Before(t.at) {
			t.at = u.at
		}
	}
	return t
}

// stale reports whether a container's layer needs measuring again: it can
// change while the container exists in the runtime, and once more up to
// its exit; an exited container's last figure taken after its exit stays.
func (w *writableLayers) stale(r *Record) bool {
	w.mu.Lock()
	u, ok := w.usage[r.ID]
	w.mu.Unlock()
	switch r.State {
	case StateCreated, StateRunning:
		return true
	case StateExited:
		return !ok || u.at.UnixNano() <= r.FinishedAt
	}
	return false
}

// refreshLoop measures the writable layers of the live containers every
// period until ctx ends; one walk at a time, so a node with many or large
// layers spreads the I/O rather than bursting it.
func (m *Manager) refreshLoop(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		m.refreshLayers(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// refreshLayers is one round: every container whose layer may have
// changed is measured again; figures of containers no longer known go.
func (m *Manager) refreshLayers(ctx context.Context) {
	known := map[string]bool{}
	for _, c := range m.index.All() {
		if ctx.Err() != nil {
			return
		}
		v := c.view()
		known[v.ID] = true
		if v.State == StateCreating || !m.layers.stale(v) {
			continue
		}
		if _, err := m.layers.measure(v.ID, m.upperDir(v.ID)); err != nil {
			m.logger(v).Debug("measure writable layer", "error", err)
		}
	}
	m.layers.mu.Lock()
	for id := range m.layers.usage {
		if !known[id] {
			delete(m.layers.usage, id)
		}
	}
	m.layers.mu.Unlock()
}
