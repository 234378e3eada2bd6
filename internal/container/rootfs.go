package container

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/huskrt/husk/internal/oci"
)

// idmap is a pod's user namespace as the rootfs needs it.
type idmap struct {
	nsPath           string
	rootUID, rootGID uint32
}

// podUserns is the user namespace of a pod that has its own (its infra
// created it); nil for a pod in the node's.
func podUserns(sb SandboxInfo) *idmap {
	uids, gids, ok := oci.PodIDMappings(sb.Config)
	if !ok {
		return nil
	}
	return &idmap{nsPath: fmt.Sprintf("/proc/%d/ns/user", sb.InfraPID), rootUID: uids[0].HostID, rootGID: gids[0].HostID}
}

// mountRootfs mounts the container's rootfs: the overlay of the image
// layers (lowest last in lowerdir) under the container's own upper dir. In
// a pod with its own user namespace the layers are seen through idmapped
// mounts, so the image's root is the pod's root.
func (m *Manager) mountRootfs(rec *Record, layers []string, userns *idmap) (string, error) {
	dir := m.rootDir(rec.ID)
	upper, work, rootfs := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "rootfs")
	for _, d := range []string{upper, work, rootfs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", fmt.Errorf("rootfs: %w", err)
		}
	}
	if userns != nil {
		// What the container writes belongs to the pod's root.
		if err := os.Chown(upper, int(userns.rootUID), int(userns.rootGID)); err != nil {
			return "", fmt.Errorf("rootfs: %w", err)
		}
		views := make([]view, len(layers))
		for i, l := range layers {
			views[i] = view{src: l, userns: userns.nsPath}
		}
		staged, cleanup, err := stageViews(filepath.Join(dir, "idmap"), views)
		if err != nil {
			return "", fmt.Errorf("rootfs: idmapped layers: %w", err)
		}
		// overlayfs keeps its own clones of the layer mounts: the staged
		// ones go as soon as it is mounted.
		defer cleanup()
		layers = staged
	}
	lower := make([]string, 0, len(layers))
	for i := len(layers) - 1; i >= 0; i-- {
		lower = append(lower, layers[i])
	}
	if len(lower) == 0 {
		empty := filepath.Join(dir, "empty")
		if err := os.MkdirAll(empty, 0o755); err != nil {
			return "", fmt.Errorf("rootfs: %w", err)
		}
		lower = append(lower, empty)
	}
	if err := mountOverlay(rootfs, lower, upper, work); err != nil {
		return "", fmt.Errorf("mount rootfs overlay (%d layers): %w", len(layers), err)
	}
	rec.RootfsMounted = true
	return rootfs, nil
}

// mountOverlay mounts an overlay of lower (top-most first) at target;
// read-only when upper is "" (an image volume). mount(2) takes the options
// as one page; an image with many layers (or long paths) passes that, and
// then the layers are given one by one through the new mount API
// ("lowerdir+", Linux 6.8+), which has no limit.
func mountOverlay(target string, lower []string, upper, work string) error {
	data := "lowerdir=" + strings.Join(lower, ":")
	var flags uintptr
	var attrs int
	if upper != "" {
		data += ",upperdir=" + upper + ",workdir=" + work
	} else {
		flags, attrs = unix.MS_RDONLY, unix.MOUNT_ATTR_RDONLY
	}
	if len(data) < os.Getpagesize()-1 {
		return unix.Mount("overlay", target, "overlay", flags, data)
	}
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen: %w", err)
	}
	defer unix.Close(fd)
	for _, l := range lower {
		if err := unix.FsconfigSetString(fd, "lowerdir+", l); err != nil {
			return fmt.Errorf("overlay options longer than a page need lowerdir+ (Linux 6.8+): %w: %w", err, errdefs.ErrNotImplemented)
		}
	}
	if upper != "" {
		if err := unix.FsconfigSetString(fd, "upperdir", upper); err != nil {
			return fmt.Errorf("upperdir: %w", err)
		}
		if err := unix.FsconfigSetString(fd, "workdir", work); err != nil {
			return fmt.Errorf("workdir: %w", err)
		}
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return fmt.Errorf("create overlay: %w", err)
	}
	mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, attrs)
	if err != nil {
		return fmt.Errorf("fsmount: %w", err)
	}
	defer unix.Close(mfd)
	return unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH)
}
