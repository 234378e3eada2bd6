package container

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/huskrt/husk/internal/testutil"
)

// A recursively read-only view of a shared volume (the kubelet's pod dirs
// are rshared for Bidirectional propagation) is read-only down to its
// submounts, and detaching it leaves the volume's own submounts mounted:
// the view is cut from the volume's peer group, so its unmount does not
// propagate (node conformance: a later container of the pod unmounts the
// tmpfs an earlier one mounted).
func TestStagedViewLeavesSharedSourceAlone(t *testing.T) {
	testutil.RequiresRoot(t, "bind mounts")
	dir := t.TempDir()
	src, sub := filepath.Join(dir, "vol"), filepath.Join(dir, "vol", "tmpfs")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(src, src, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(src, unix.MNT_DETACH) })
	if err := unix.Mount("", src, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("none", sub, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(sub, unix.MNT_DETACH) })

	staged, cleanup, err := stageViews(filepath.Join(dir, "views"), []view{{src: src, rro: true}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(staged[0], "tmpfs", "f"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write into the view's submount: %v, want EROFS", err)
	}
	cleanup()
	if ok, err := mountinfo.Mounted(sub); err != nil || !ok {
		t.Errorf("the volume's submount %s after the view was detached: mounted %v (%v), want still mounted", sub, ok, err)
	}
	if err := os.WriteFile(filepath.Join(sub, "f"), nil, 0o644); err != nil {
		t.Errorf("the volume's submount is not writable any more: %v", err)
	}
}
