package store

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

type rec struct{ V int }

func TestCreateReservesName(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(Sandboxes, SandboxNames, "id1", "pod_ns_uid_0", rec{1}); err != nil {
		t.Fatal(err)
	}
	err = s.Create(Sandboxes, SandboxNames, "id2", "pod_ns_uid_0", rec{2})
	if !errdefs.IsAlreadyExists(err) || !strings.Contains(err.Error(), "id1") {
		t.Errorf("second reservation = %v, want AlreadyExists naming id1", err)
	}
	if err := s.Put(Sandboxes, "id1", rec{3}); err != nil {
		t.Fatal(err)
	}
	// A second opener (another huskd on this root) is refused.
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "another huskd") {
		t.Errorf("second Open = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Records survive a reopen; deleting frees the name.
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var got []int
	if err := s.List(Sandboxes, func(id string, data []byte) error {
		var r rec
		if err := json.Unmarshal(data, &r); err != nil {
			return err
		}
		got = append(got, r.V)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != 3 {
		t.Errorf("records after reopen %v", got)
	}
	if err := s.Delete(Sandboxes, SandboxNames, "id1", "pod_ns_uid_0"); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(Sandboxes, SandboxNames, "id2", "pod_ns_uid_0", rec{2}); err != nil {
		t.Errorf("name not freed: %v", err)
	}
}
