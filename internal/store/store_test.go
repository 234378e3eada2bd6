package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
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

// A damaged or truncated file is refused with a message that names it and
// says what to do, whatever bbolt does on reading it (an error, a panic,
// a fault on a page past the end of the file); the running process is
// not hurt. A sound file opens with its records.
func TestOpenRefusesDamagedFile(t *testing.T) {
	page := os.Getpagesize()
	tests := []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"sound", func(*testing.T, string) {}},
		{"truncated", func(t *testing.T, path string) {
			if err := os.Truncate(path, int64(3*page)); err != nil {
				t.Fatal(err)
			}
		}},
		{"pages overwritten", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			junk := bytes.Repeat([]byte{0xa5, 0x17, 0xff, 0x03}, page)
			if _, err := f.WriteAt(junk, int64(3*page)); err != nil {
				t.Fatal(err)
			}
		}},
		{"not a database", func(t *testing.T, path string) {
			if err := os.WriteFile(path, bytes.Repeat([]byte("husk"), 4*page), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		path := filepath.Join(t.TempDir(), "husk.db")
		s, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 300 {
			if err := s.Put(Containers, fmt.Sprintf("id%03d", i), rec{V: i}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		tt.damage(t, path)
		s, err = Open(path)
		if tt.name == "sound" {
			if err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			n := 0
			_ = s.List(Containers, func(string, []byte) error { n++; return nil })
			s.Close()
			if n != 300 {
				t.Errorf("%s: %d records after reopen, want 300", tt.name, n)
			}
			continue
		}
		if err == nil {
			s.Close()
			t.Errorf("%s: a damaged store opened", tt.name)
			continue
		}
		for _, want := range []string{"store " + path + " is damaged", "mv " + path, "huskd does not start"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error lacks %q: %v", tt.name, want, err)
			}
		}
	}
}
