package lifecycle

import (
	"bytes"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"

	"github.com/huskrt/husk/internal/store"
)

type object struct{ id string }

func TestIndex(t *testing.T) {
	x := NewIndex[*object]("thing")
	a, b, c := &object{"aaa111"}, &object{"aab222"}, &object{"ccc333"}
	if _, ok := x.Reserve(a.id, "first", a); !ok {
		t.Fatal("reserve of a free name failed")
	}
	if h, ok := x.Reserve(b.id, "first", b); ok || h != a {
		t.Errorf("reserve of a held name = %v, %v; want holder a", h, ok)
	}
	x.Reserve(b.id, "second", b)
	x.Add(c.id, "third", c)

	for _, tt := range []struct {
		id      string
		want    *object
		wantErr func(error) bool
	}{
		{id: "aaa111", want: a},
		{id: "aab", want: b},
		{id: "c", want: c},
		{id: "aa", wantErr: errdefs.IsInvalidArgument},
		{id: "", wantErr: errdefs.IsInvalidArgument},
		{id: "zzz", wantErr: errdefs.IsNotFound},
	} {
		got, err := x.Get(tt.id)
		if tt.wantErr != nil {
			if !tt.wantErr(err) || !strings.Contains(err.Error(), "thing") {
				t.Errorf("Get(%q) = %v, %v; want an error naming the thing", tt.id, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Get(%q) = %v, %v; want %v", tt.id, got, err, tt.want)
		}
	}
	if ids := x.IDs(); strings.Join(ids, ",") != "aaa111,aab222,ccc333" || len(x.All()) != 3 {
		t.Errorf("IDs = %v, All has %d", ids, len(x.All()))
	}

	// A successor that took the name is not dropped with its predecessor.
	x.Remove(a.id, "first", a)
	d := &object{"ddd444"}
	x.Add(d.id, "third", d)
	x.Remove(c.id, "third", c)
	if h, ok := x.Named("third"); !ok || h != d {
		t.Errorf("Named(third) after removing its old holder = %v, %v; want d", h, ok)
	}
	if x.Has(a.id) || x.Has(c.id) || !x.Has(d.id) {
		t.Errorf("Has after removals: a %v, c %v, d %v", x.Has(a.id), x.Has(c.id), x.Has(d.id))
	}
}

type record struct {
	ID    string   `json:"id"`
	Name  string   `json:"name"`
	State string   `json:"state"`
	IPs   []string `json:"ips"`
}

func TestRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	st, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	recs := Records[record]{Store: st, Bucket: store.Containers, Names: store.ContainerName, What: "container", IDKey: "container_id"}
	var snap Snapshot[record]
	if snap.Load() != nil {
		t.Fatal("snapshot published before anything was")
	}
	r := record{ID: "id1", Name: "n", State: "CREATING"}
	if err := recs.Create(r.ID, r.Name, &r, &snap); err != nil {
		t.Fatal(err)
	}
	other := record{ID: "id2", Name: "n"}
	if err := recs.Create(other.ID, other.Name, &other, &Snapshot[record]{}); !errdefs.IsAlreadyExists(err) || !strings.Contains(err.Error(), "container id2") {
		t.Errorf("create with a taken name = %v; want AlreadyExists naming container id2", err)
	}
	r.State, r.IPs = "READY", []string{"10.0.0.2"}
	if v := snap.Load(); v.State != "CREATING" {
		t.Errorf("snapshot changed before Put: %+v", v)
	}
	if err := recs.Put(r.ID, &r, &snap); err != nil {
		t.Fatal(err)
	}
	if v := snap.Load(); v.State != "READY" || len(v.IPs) != 1 || v == &r {
		t.Errorf("snapshot after Put = %+v (a copy of the record wanted)", v)
	}

	loaded, err := recs.Load(slog.Default(), nil)
	if err != nil || len(loaded) != 1 || loaded[0].State != "READY" {
		t.Errorf("Load = %+v, %v", loaded, err)
	}
	if err := recs.Delete(r.ID, r.Name); err != nil {
		t.Fatal(err)
	}
	if err := recs.Delete(r.ID, r.Name); err != nil {
		t.Errorf("second delete: %v", err)
	}
	if err := recs.Create(other.ID, other.Name, &other, &Snapshot[record]{}); err != nil {
		t.Errorf("name not freed by Delete: %v", err)
	}
}

// Issue 11, item 5: a record that cannot be read (it does not decode, or
// the owner's check refuses it) is quarantined: logged with its key, moved
// out of its bucket with its bytes and why, and its name released so that
// the object can be made again. The others are served.
func TestLoadQuarantines(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	recs := Records[record]{Store: st, Bucket: store.Containers, Names: store.ContainerName, What: "container", IDKey: "container_id"}
	for _, r := range []record{{ID: "good", Name: "g"}, {ID: "bad", Name: "b"}, {ID: "refused", Name: "r"}} {
		if err := recs.Create(r.ID, r.Name, &r, &Snapshot[record]{}); err != nil {
			t.Fatal(err)
		}
	}
	garbage := []byte("{not json")
	if err := st.DB().Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(store.Containers)).Put([]byte("bad"), garbage)
	}); err != nil {
		t.Fatal(err)
	}
	check := func(key string, r *record) error {
		if r.ID == "refused" {
			return errors.New("no sandbox")
		}
		return nil
	}
	var logs bytes.Buffer
	loaded, err := recs.Load(slog.New(slog.NewTextHandler(&logs, nil)), check)
	if err != nil || len(loaded) != 1 || loaded[0].ID != "good" {
		t.Fatalf("Load = %+v, %v; want the good record only", loaded, err)
	}
	for _, key := range []string{"container_id=bad", "container_id=refused", "no sandbox"} {
		if !strings.Contains(logs.String(), key) {
			t.Errorf("log lacks %q: %s", key, logs.String())
		}
	}
	q, err := st.ListQuarantined()
	if err != nil || len(q) != 2 {
		t.Fatalf("quarantine = %+v, %v; want 2 records", q, err)
	}
	byKey := map[string]store.Quarantined{q[0].Key: q[0], q[1].Key: q[1]}
	if b := byKey["bad"]; !bytes.Equal(b.Value, garbage) || b.Bucket != store.Containers || b.Reason == "" || len(b.Names) != 1 || b.Names[0] != "b" {
		t.Errorf("quarantined bad = %+v", b)
	}
	if r := byKey["refused"]; r.Reason != "no sandbox" || !strings.Contains(string(r.Value), `"refused"`) {
		t.Errorf("quarantined refused = %+v", r)
	}
	// Their names are free; a second Load serves the same and quarantines
	// nothing more.
	for _, r := range []record{{ID: "new1", Name: "b"}, {ID: "new2", Name: "r"}} {
		if err := recs.Create(r.ID, r.Name, &r, &Snapshot[record]{}); err != nil {
			t.Errorf("the name of a quarantined record is still held: %v", err)
		}
	}
	if loaded, err := recs.Load(slog.Default(), check); err != nil || len(loaded) != 3 {
		t.Errorf("second Load = %+v, %v", loaded, err)
	}
	if q, _ := st.ListQuarantined(); len(q) != 2 {
		t.Errorf("quarantine after a second Load holds %d", len(q))
	}
}

// Readers load snapshots while the owner publishes: race-free under -race.
func TestSnapshotConcurrentReaders(t *testing.T) {
	var snap Snapshot[record]
	r := record{ID: "x", State: "A"}
	snap.Publish(&r)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				if v := snap.Load(); v.ID != "x" {
					t.Errorf("snapshot = %+v", v)
					return
				}
			}
		}()
	}
	for i := range 1000 {
		r.State = string(rune('A' + i%26))
		snap.Publish(&r)
	}
	wg.Wait()
}
