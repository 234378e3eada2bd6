// Package store is huskd's one embedded transactional database (bbolt) under
// the root dir. It holds records as JSON in named buckets and the name
// reservations of sandboxes and containers; it knows nothing of what the
// records mean.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Bucket names. Each kind of record has its own bucket and, where names must
// be unique, a names bucket mapping name → id.
const (
	Sandboxes     = "sandboxes"
	SandboxNames  = "sandbox-names"
	Containers    = "containers"
	ContainerName = "container-names"
	// Quarantine keeps the records that could not be read, out of their
	// buckets: neither served nor lost (see Quarantine).
	Quarantine = "quarantine"
)

// Store wraps the database file.
type Store struct {
	db *bolt.DB
}

// Open opens (creating) the database at path. An existing file is checked
// first, page by page (verify): a damaged one is refused with what to do.
// bbolt holds an exclusive flock on the file, so a second huskd on the
// same root fails here instead of corrupting state; it gets a clear
// message after a short wait.
func Open(path string) (*Store, error) {
	// 0711, as containerd's root: a container in a user namespace must
	// traverse it to reach its rootfs; the names below are not secret.
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if err := verify(path); err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 500 * time.Millisecond, NoFreelistSync: true})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("open store %s: locked by another process (is another huskd running on this root?)", path)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range []string{Sandboxes, SandboxNames, Containers, ContainerName, Quarantine} {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: create buckets: %w", path, err)
	}
	return &Store{db: db}, nil
}

// DB is the underlying database, for packages that keep their own buckets.
func (s *Store) DB() *bolt.DB { return s.db }

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Create stores a new record under id and reserves name for it in one
// transaction. A name held by another id fails with ErrAlreadyExists naming
// the holder.
func (s *Store) Create(bucket, namesBucket, id, name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s %s: %w", bucket, id, err)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		names := tx.Bucket([]byte(namesBucket))
		if holder := names.Get([]byte(name)); holder != nil && string(holder) != id {
			return fmt.Errorf("name %q is reserved by %s: %w", name, holder, errdefs.ErrAlreadyExists)
		}
		recs := tx.Bucket([]byte(bucket))
		if recs.Get([]byte(id)) != nil {
			return fmt.Errorf("%s %s: %w", bucket, id, errdefs.ErrAlreadyExists)
		}
		if err := names.Put([]byte(name), []byte(id)); err != nil {
			return err
		}
		return recs.Put([]byte(id), b)
	})
}

// Put replaces the record under id.
func (s *Store) Put(bucket, id string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s %s: %w", bucket, id, err)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucket)).Put([]byte(id), b)
	})
}

// Delete removes the record under id and its name reservation, if the name
// is still held by id. Deleting what is not there succeeds.
func (s *Store) Delete(bucket, namesBucket, id, name string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		names := tx.Bucket([]byte(namesBucket))
		if holder := names.Get([]byte(name)); holder != nil && string(holder) == id {
			if err := names.Delete([]byte(name)); err != nil {
				return err
			}
		}
		return tx.Bucket([]byte(bucket)).Delete([]byte(id))
	})
}

// List decodes every record of bucket with decode, in key order.
func (s *Store) List(bucket string, decode func(id string, data []byte) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucket)).ForEach(func(k, v []byte) error {
			return decode(string(k), v)
		})
	})
}

// Quarantined is a record Quarantine moved out of its bucket, as it is
// kept in the quarantine bucket (JSON, Value base64), keyed
// "<bucket>/<key>/<time>".
type Quarantined struct {
	Bucket string `json:"bucket"`
	Key    string `json:"key"`
	// Reason says why it could not be read; At is when it was moved.
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
	// Names are the name reservations that held it, released.
	Names []string `json:"names,omitempty"`
	// Value is the record's bytes as they were.
	Value []byte `json:"value"`
}

// Quarantine moves the record under key out of bucket into the quarantine
// bucket, with reason, and releases the names of namesBucket reserved for
// it, in one transaction: a record that cannot be read is neither served
// nor lost, and does not hold its name forever (its owner can make the
// object again). Quarantining what is not there does nothing.
func (s *Store) Quarantine(bucket, namesBucket, key, reason string) (*Quarantined, error) {
	var q *Quarantined
	err := s.db.Update(func(tx *bolt.Tx) error {
		recs := tx.Bucket([]byte(bucket))
		v := recs.Get([]byte(key))
		if v == nil {
			return nil
		}
		q = &Quarantined{Bucket: bucket, Key: key, Reason: reason, At: time.Now().UTC(), Value: append([]byte(nil), v...)}
		if names := tx.Bucket([]byte(namesBucket)); names != nil {
			c := names.Cursor()
			for n, id := c.First(); n != nil; n, id = c.Next() {
				if string(id) == key {
					q.Names = append(q.Names, string(n))
				}
			}
			for _, n := range q.Names {
				if err := names.Delete([]byte(n)); err != nil {
					return err
				}
			}
		}
		b, err := json.Marshal(q)
		if err != nil {
			return err
		}
		qkey := fmt.Sprintf("%s/%s/%d", bucket, key, q.At.UnixNano())
		if err := tx.Bucket([]byte(Quarantine)).Put([]byte(qkey), b); err != nil {
			return err
		}
		return recs.Delete([]byte(key))
	})
	if err != nil {
		return nil, fmt.Errorf("quarantine %s %s: %w", bucket, key, err)
	}
	return q, nil
}

// ListQuarantined returns what the quarantine bucket holds, in key order.
func (s *Store) ListQuarantined() ([]Quarantined, error) {
	var out []Quarantined
	err := s.List(Quarantine, func(k string, data []byte) error {
		var q Quarantined
		if err := json.Unmarshal(data, &q); err != nil {
			return fmt.Errorf("quarantined %s: %w", k, err)
		}
		out = append(out, q)
		return nil
	})
	return out, err
}
