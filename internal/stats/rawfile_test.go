package stats

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/cgroups/v3"
)

// The files of a cgroup read are kept open and read again with pread: a
// change shows at the next read; Forget closes them; beyond the limit the
// files are opened for each read.
func TestFileCache(t *testing.T) {
	root := filepath.Join(t.TempDir(), "cgroup2")
	for _, g := range []string{"a", "b"} {
		dir := filepath.Join(root, g)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"cpu.stat", "memory.stat", "memory.current", "memory.max", "pids.current"} {
			b, err := os.ReadFile(filepath.Join("testdata/cgroup2/kubepods/podA/limited", f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	r := &Reader{Mode: cgroups.Unified, Root: root, Proc: "testdata/noswap"}
	r.files.limit = 1
	read := func(g string) *Cgroup {
		t.Helper()
		c, err := r.Read("/"+g, Basic)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if c := read("a"); c.Pids.Current != 3 || r.files.size() != 1 {
		t.Fatalf("first read: pids %d, %d cgroups kept", c.Pids.Current, r.files.size())
	}
	// Rewritten in place, as the kernel renders a cgroup file afresh.
	if err := os.WriteFile(filepath.Join(root, "a", "pids.current"), []byte("42\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if c := read("a"); c.Pids.Current != 42 {
		t.Errorf("after a change: pids %d, want 42", c.Pids.Current)
	}
	// Over the limit: read all the same, not kept.
	if c := read("b"); c.Pids.Current != 3 || r.files.size() != 1 {
		t.Errorf("over the limit: pids %d, %d cgroups kept", c.Pids.Current, r.files.size())
	}
	r.Forget("/a")
	if r.files.size() != 0 {
		t.Errorf("after Forget: %d cgroups kept", r.files.size())
	}
	if c := read("a"); c.Pids.Current != 42 || r.files.size() != 1 {
		t.Errorf("read again after Forget: pids %d, %d cgroups kept", c.Pids.Current, r.files.size())
	}
	// A missing cgroup is not kept.
	r.Forget("/a")
	if _, err := r.Read("/gone", Basic); !errors.Is(err, os.ErrNotExist) || r.files.size() != 0 {
		t.Errorf("missing cgroup: %v, %d kept; want os.ErrNotExist, none", err, r.files.size())
	}
}
