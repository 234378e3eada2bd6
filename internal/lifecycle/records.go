package lifecycle

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/huskrt/husk/internal/store"
)

// Snapshot is the last persisted copy of an object's record, for readers
// (status, list, stats) that must not wait behind the object's lock, which
// its owner holds across slow I/O. A published copy shares the record's
// slices: the owner replaces them, never changes them in place.
type Snapshot[R any] struct{ p atomic.Pointer[R] }

// Load returns the published copy; nil before the first Publish.
func (s *Snapshot[R]) Load() *R { return s.p.Load() }

// Publish makes a copy of rec what readers see.
func (s *Snapshot[R]) Publish(rec *R) {
	c := *rec
	s.p.Store(&c)
}

// Records is one kind of record in the store, as JSON: its bucket, the
// bucket of its reserved names, and how errors and logs name it.
type Records[R any] struct {
	Store *store.Store
	// Bucket holds the records by ID; Names maps each name to its ID.
	Bucket, Names string
	// What names the kind in errors ("sandbox", "container"); IDKey is
	// the log attribute of its ID ("pod_sandbox_id", "container_id").
	What, IDKey string
}

// Create persists a new record and reserves its name in one transaction,
// then publishes it. A name held by another ID is AlreadyExists.
func (r Records[R]) Create(id, name string, rec *R, snap *Snapshot[R]) error {
	if err := r.Store.Create(r.Bucket, r.Names, id, name, rec); err != nil {
		return fmt.Errorf("%s %s: reserve name %q: %w", r.What, id, name, err)
	}
	snap.Publish(rec)
	return nil
}

// Put persists rec, then publishes it: readers never see a state the store
// does not hold.
func (r Records[R]) Put(id string, rec *R, snap *Snapshot[R]) error {
	if err := r.Store.Put(r.Bucket, id, rec); err != nil {
		return fmt.Errorf("%s %s: persist: %w", r.What, id, err)
	}
	snap.Publish(rec)
	return nil
}

// Delete removes the record and its name; deleting what is gone succeeds.
func (r Records[R]) Delete(id, name string) error {
	if err := r.Store.Delete(r.Bucket, r.Names, id, name); err != nil {
		return fmt.Errorf("%s %s: delete record: %w", r.What, id, err)
	}
	return nil
}

// Load decodes every record, for recovery. A record that cannot be read
// (it does not decode, or check refuses it) is quarantined: moved to the
// store's quarantine bucket with why, its name released, and logged with
// its key. The others are served: one bad record must not keep huskd, and
// with it every other pod of the node, from starting, nor hold its name
// forever (the kubelet makes the object again). What the record owned on
// the host is released at recovery as what no record knows.
func (r Records[R]) Load(log *slog.Logger, check func(key string, rec *R) error) ([]R, error) {
	var out []R
	bad := map[string]error{}
	err := r.Store.List(r.Bucket, func(key string, data []byte) error {
		var rec R
		err := json.Unmarshal(data, &rec)
		if err == nil && check != nil {
			err = check(key, &rec)
		}
		if err != nil {
			bad[key] = err
			return nil
		}
		out = append(out, rec)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load %s records: %w", r.What, err)
	}
	for key, why := range bad {
		q, err := r.Store.Quarantine(r.Bucket, r.Names, key, why.Error())
		if err != nil {
			return nil, err
		}
		if q != nil {
			log.Error("quarantined an unreadable "+r.What+" record: it is not served, its name is released",
				r.IDKey, key, "error", why, "names", q.Names, "bucket", store.Quarantine)
		}
	}
	return out, nil
}
