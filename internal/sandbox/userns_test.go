package sandbox

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// A dir that others cannot search, anywhere above the path, is named; the
// path itself being a file does not matter.
func TestSearchableByOthers(t *testing.T) {
	tests := []struct {
		name  string
		modes [3]os.FileMode // top, middle, leaf dir
		bad   string         // the dir named, "" for none
	}{
		{"all searchable", [3]os.FileMode{0o711, 0o755, 0o711}, ""},
		{"top 0700", [3]os.FileMode{0o700, 0o755, 0o711}, "top"},
		{"middle 0750", [3]os.FileMode{0o711, 0o750, 0o711}, "top/mid"},
		{"leaf 0700", [3]os.FileMode{0o711, 0o755, 0o700}, "top/mid/leaf"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			// The test's temp dirs are 0700, like the state dir that showed this.
			for _, d := range []string{filepath.Dir(base), base} {
				if err := os.Chmod(d, 0o711); err != nil {
					t.Fatal(err)
				}
			}
			leaf := filepath.Join(base, "top", "mid", "leaf")
			if err := os.MkdirAll(leaf, 0o755); err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(leaf, "husk-pause")
			if err := os.WriteFile(file, nil, 0o700); err != nil {
				t.Fatal(err)
			}
			for i, d := range []string{"top", "top/mid", "top/mid/leaf"} {
				if err := os.Chmod(filepath.Join(base, d), tt.modes[i]); err != nil {
					t.Fatal(err)
				}
			}
			err := searchableByOthers(file)
			switch {
			case tt.bad == "" && err != nil:
				t.Errorf("searchableByOthers: %v, want nil", err)
			case tt.bad != "" && (err == nil || !errdefs.IsFailedPrecondition(err) ||
				!strings.HasPrefix(err.Error(), filepath.Join(base, tt.bad)+" is mode")):
				t.Errorf("searchableByOthers: %v, want FailedPrecondition naming %s", err, tt.bad)
			}
		})
	}
}
