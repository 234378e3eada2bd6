package container

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/huskrt/husk/internal/lifecycle"
)

// A writable layer is walked once when first asked about and then only by
// the refresh rounds: what a container writes shows at the next round,
// never on a stats call; an exited container is measured once more after
// its exit, then left alone; a removed one is forgotten.
func TestWritableLayersRefresh(t *testing.T) {
	root := t.TempDir()
	m := &Manager{opts: Options{RootDir: root}, log: slog.Default(), index: lifecycle.NewIndex[*Container]("container"), layers: newWritableLayers()}
	add := func(id string, st State) *Container {
		c := &Container{rec: Record{ID: id, Name: id, State: st}}
		if err := os.MkdirAll(m.upperDir(id), 0o755); err != nil {
			t.Fatal(err)
		}
		if _, ok := m.index.Reserve(id, id, c); !ok {
			t.Fatalf("reserve %s", id)
		}
		c.snapshot.Publish(&c.rec)
		return c
	}
	write := func(id, name string, size int) {
		if err := os.WriteFile(filepath.Join(m.upperDir(id), name), make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	running, exited := add("running", StateRunning), add("exited", StateExited)
	exited.rec.FinishedAt = time.Now().Add(-time.Hour).UnixNano()
	exited.snapshot.Publish(&exited.rec)

	first, err := m.layers.get("running", m.upperDir("running"))
	if err != nil || first.inodes != 1 {
		t.Fatalf("first measure: %+v, %v; want the empty upper dir", first, err)
	}
	write("running", "a", 1<<20)
	write("exited", "b", 4096)
	if u, _ := m.layers.get("running", m.upperDir("running")); u != first {
		t.Errorf("a stats call walked the layer again: %+v, want the cached %+v", u, first)
	}
	ctx := context.Background()
	m.refreshLayers(ctx)
	u, _ := m.layers.get("running", m.upperDir("running"))
	if u.inodes != 2 || u.bytes < 1<<20 || !u.at.After(first.at) {
		t.Errorf("after a round: %+v, want the 1 MiB file counted", u)
	}

	// The exited container: measured at the first round after its exit,
	// then not again.
	e1, _ := m.layers.get("exited", m.upperDir("exited"))
	write("exited", "c", 4096)
	m.refreshLayers(ctx)
	if e2, _ := m.layers.get("exited", m.upperDir("exited")); e2 != e1 || e1.inodes != 2 {
		t.Errorf("exited container: %+v then %+v, want one measurement after its exit", e1, e2)
	}

	if tot := m.layers.total(); tot.bytes != u.bytes+e1.bytes || tot.inodes != u.inodes+e1.inodes || !tot.at.Equal(u.at) && !tot.at.Equal(e1.at) {
		t.Errorf("total %+v of %+v and %+v", tot, u, e1)
	}

	// Removed: dropped at once; one the index no longer knows, at the next
	// round.
	m.layers.drop("exited")
	m.index.Remove("exited", "exited", exited)
	if tot := m.layers.total(); tot != (layerUsage{bytes: u.bytes, inodes: u.inodes, at: tot.at}) {
		t.Errorf("after dropping one: total %+v, want %+v", tot, u)
	}
	m.index.Remove("running", "running", running)
	m.refreshLayers(ctx)
	if tot := m.layers.total(); tot.bytes != 0 || tot.inodes != 0 {
		t.Errorf("after removal: total %+v, want nothing", tot)
	}
}
