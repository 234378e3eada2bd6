package container

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/huskrt/husk/internal/testutil"
)

// An image whose layer paths do not fit mount(2)'s one page of options:
// every layer still shows, top-most winning.
func TestMountOverlayManyLayers(t *testing.T) {
	testutil.RequiresRoot(t, "overlay mounts")
	dir := t.TempDir()
	long := strings.Repeat("l", 120)
	var lower []string
	for i := 0; i < 80; i++ {
		l := filepath.Join(dir, fmt.Sprintf("%s-%03d", long, i))
		if err := os.MkdirAll(l, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(l, fmt.Sprintf("f%03d", i)), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		// The same name in every layer: the top-most (first) must win.
		if err := os.WriteFile(filepath.Join(l, "which"), []byte(fmt.Sprint(i)), 0o644); err != nil {
			t.Fatal(err)
		}
		lower = append(lower, l)
	}
	upper, work, target := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "rootfs")
	for _, d := range []string{upper, work, target} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(strings.Join(lower, ":")); n < os.Getpagesize() {
		t.Fatalf("layer paths are %d bytes: the test needs more than a page", n)
	}
	if err := mountOverlay(target, lower, upper, work); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(target, unix.MNT_DETACH)
	for _, f := range []string{"f000", "f079"} {
		if _, err := os.Stat(filepath.Join(target, f)); err != nil {
			t.Errorf("%s of a layer missing: %v", f, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(target, "which")); string(b) != "0" {
		t.Errorf("top-most layer should win, got layer %q", b)
	}
}
