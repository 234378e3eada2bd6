package container

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/huskrt/husk/internal/testutil"
)

// An image volume is its layers, read-only: an overlay of several, the one
// layer bound; image_sub_path narrows it to one of its directories, and
// whatever would lead out of the image is refused. unmountBelow leaves no
// mount behind.
func TestMountImage(t *testing.T) {
	testutil.RequiresRoot(t, "overlay and bind mounts")
	dir := t.TempDir()
	lower, upper := filepath.Join(dir, "l0"), filepath.Join(dir, "l1")
	files := map[string]string{
		"l0/etc/os-release": "lower", "l0/data.json": "old", "l0/dir/f": "x",
		"l1/data.json": "kitten.jpg",
	}
	for p, body := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, target := range map[string]string{"up": "../..", "abs": "/etc", "inside": "etc", "file": "data.json"} {
		if err := os.Symlink(target, filepath.Join(upper, name)); err != nil {
			t.Fatal(err)
		}
	}
	mnts := filepath.Join(dir, "mnt")
	t.Cleanup(func() { _ = unmountBelow(mnts) })

	whole := filepath.Join(mnts, "whole")
	if err := mountImage(whole, []string{lower, upper}, nil); err != nil {
		t.Fatal(err)
	}
	read := func(p string) string { b, _ := os.ReadFile(p); return string(b) }
	if got := read(filepath.Join(whole, "data.json")) + "," + read(filepath.Join(whole, "etc/os-release")); got != "kitten.jpg,lower" {
		t.Errorf("overlay of two layers shows %q, want the upper's data.json and the lower's os-release", got)
	}
	if err := os.WriteFile(filepath.Join(whole, "new"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write into the image volume: %v, want EROFS", err)
	}
	one := filepath.Join(mnts, "one")
	if err := mountImage(one, []string{lower}, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(one, "new"), nil, 0o644); !errors.Is(err, unix.EROFS) || read(filepath.Join(one, "dir/f")) != "x" {
		t.Errorf("one layer bound read-only: write %v, dir/f %q", err, read(filepath.Join(one, "dir/f")))
	}

	for sub, want := range map[string]string{"etc": "", "inside": "", "dir/../etc": "",
		"missing": "does not exist", "data.json": "not a directory", "file": "not a directory",
		"up": "leaves the image", "abs": "leaves the image", "etc/../../..": "leaves the image"} {
		target := filepath.Join(mnts, strings.ReplaceAll(sub, "/", "_"))
		if err := mountImage(target, []string{lower, upper}, nil); err != nil {
			t.Fatal(err)
		}
		err := narrowToSubPath(target, sub)
		if want == "" {
			if err != nil || read(filepath.Join(target, "os-release")) != "lower" {
				t.Errorf("sub path %q: %v, os-release %q", sub, err, read(filepath.Join(target, "os-release")))
			}
			continue
		}
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), want) {
			t.Errorf("sub path %q: %v, want InvalidArgument saying %q", sub, err, want)
		}
	}

	if err := unmountBelow(mnts); err != nil {
		t.Fatal(err)
	}
	if left, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(dir)); len(left) > 0 {
		t.Errorf("%d mounts left under %s, first %s", len(left), dir, left[0].Mountpoint)
	}
	if read(filepath.Join(lower, "etc/os-release")) != "lower" {
		t.Error("a layer lost its content")
	}
}
