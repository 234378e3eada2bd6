// Package ids makes and finds the IDs of sandboxes and containers: 64 hex
// digits, which users may shorten to any unique prefix, as crictl does.
package ids

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
)

// New returns a random 64-hex-digit ID.
func New() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on Linux
	}
	return hex.EncodeToString(b[:])
}

// Find returns the entry of byID whose ID is id or starts with it. what
// names the kind of object in errors ("pod sandbox", "container"): an
// empty or ambiguous id is InvalidArgument, an unknown one NotFound.
func Find[T any](byID map[string]T, id, what string) (T, error) {
	var zero T
	if id == "" {
		return zero, fmt.Errorf("%s id is empty: %w", what, errdefs.ErrInvalidArgument)
	}
	if v, ok := byID[id]; ok {
		return v, nil
	}
	var found T
	n := 0
	for full, v := range byID {
		if strings.HasPrefix(full, id) {
			found = v
			n++
		}
	}
	switch n {
	case 0:
		return zero, fmt.Errorf("%s %q: %w", what, id, errdefs.ErrNotFound)
	case 1:
		return found, nil
	}
	return zero, fmt.Errorf("%s id prefix %q is ambiguous: %w", what, id, errdefs.ErrInvalidArgument)
}
