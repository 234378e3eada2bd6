// Package lifecycle is the plumbing the sandbox and container managers
// share: an index of objects by ID and name, records persisted and
// published to lock-free readers, the recovery preamble that loads them,
// lifecycle events and the fresh context cleanup runs on. It knows nothing
// of what a sandbox or a container is.
package lifecycle

import (
	"sort"
	"sync"

	"github.com/huskrt/husk/internal/ids"
)

// Index finds objects by full ID, unique ID prefix (as crictl users type)
// and reserved name. Its lock guards only the maps, never an object's
// state, and is never held across I/O.
type Index[T comparable] struct {
	// what names the kind of object in errors ("pod sandbox", "container").
	what string

	mu     sync.Mutex
	byID   map[string]T
	byName map[string]T
}

// NewIndex returns an empty index of objects called what in errors.
func NewIndex[T comparable](what string) *Index[T] {
	return &Index[T]{what: what, byID: map[string]T{}, byName: map[string]T{}}
}

// Get finds an object by ID or unique ID prefix: an empty or ambiguous id
// is InvalidArgument, an unknown one NotFound.
func (x *Index[T]) Get(id string) (T, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return ids.Find(x.byID, id, x.what)
}

// Has reports whether id (in full) is indexed.
func (x *Index[T]) Has(id string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	_, ok := x.byID[id]
	return ok
}

// Named returns the object holding name.
func (x *Index[T]) Named(name string) (T, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	v, ok := x.byName[name]
	return v, ok
}

// All returns the indexed objects, in no particular order.
func (x *Index[T]) All() []T {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make([]T, 0, len(x.byID))
	for _, v := range x.byID {
		out = append(out, v)
	}
	return out
}

// IDs returns the indexed IDs, sorted.
func (x *Index[T]) IDs() []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make([]string, 0, len(x.byID))
	for id := range x.byID {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// Reserve indexes v under id and name unless another object holds name;
// then it returns that holder and false. A new object's own lock may be
// held while reserving it: Reserve takes no other lock.
func (x *Index[T]) Reserve(id, name string, v T) (holder T, ok bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if h, taken := x.byName[name]; taken {
		return h, false
	}
	x.byID[id] = v
	x.byName[name] = v
	return v, true
}

// Add indexes v under id and name, replacing what was there (recovery,
// where the store already made names unique).
func (x *Index[T]) Add(id, name string, v T) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.byID[id] = v
	x.byName[name] = v
}

// Remove drops id and name if they still index v, so removing an object
// never drops a successor that took its name.
func (x *Index[T]) Remove(id, name string, v T) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.byID[id] == v {
		delete(x.byID, id)
	}
	if x.byName[name] == v {
		delete(x.byName, name)
	}
}
