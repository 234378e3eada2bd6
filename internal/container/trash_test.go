package container

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// A removed dir is gone from its place when remove returns, and from the
// trash soon after; what a stopped huskd left in the trash goes at the
// next start; a dir on another filesystem than the trash is removed at
// once; one that is not there is removed.
func TestTrash(t *testing.T) {
	base := t.TempDir()
	trashDir := filepath.Join(base, "trash")
	if err := os.MkdirAll(filepath.Join(trashDir, "left-1", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tr, err := newTrash(ctx, trashDir, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	empty := func() bool { ents, _ := os.ReadDir(trashDir); return len(ents) == 0 }
	waitFor(t, empty, "what the last run left in the trash to go")

	other := t.TempDir()
	shm, err := os.MkdirTemp("/dev/shm", "trash-test-") // tmpfs: another filesystem than base
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(shm)
	for _, dir := range []string{filepath.Join(base, "c1"), filepath.Join(other, "c2"), filepath.Join(shm, "c3")} {
		if err := os.MkdirAll(filepath.Join(dir, "upper", "a", "b"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "upper", "a", "f"), []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := tr.remove(dir); err != nil {
			t.Fatalf("remove %s: %v", dir, err)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%s is still there after remove: %v", dir, err)
		}
	}
	if err := tr.remove(filepath.Join(base, "never")); err != nil {
		t.Errorf("remove of a dir that is not there: %v", err)
	}
	waitFor(t, empty, "the trash to be emptied")
}
