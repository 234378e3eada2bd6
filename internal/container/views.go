package container

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/oci"
)

// view is a host path seen through a detached mount with attributes the
// runtime may not be able to apply: an ID mapping (the user namespace at
// userns), recursive read-only.
type view struct {
	src    string
	userns string // path of a user namespace; "" for none
	rro    bool
}

// stageViews mounts each view under dir (open_tree, mount_setattr,
// move_mount) and returns the mount points and a cleanup that detaches
// them. A bind mount of a view, or an overlay over it, is a clone that
// keeps the attributes after the view is gone.
func stageViews(dir string, views []view) ([]string, func(), error) {
	var staged []string
	cleanup := func() {
		for _, p := range staged {
			_ = unix.Unmount(p, unix.MNT_DETACH)
		}
		_ = os.RemoveAll(dir)
	}
	fail := func(err error) ([]string, func(), error) {
		cleanup()
		return nil, nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fail(err)
	}
	for i, v := range views {
		target := filepath.Join(dir, strconv.Itoa(i))
		// A file (a volume can be one) is mounted on a file.
		if fi, err := os.Stat(v.src); err == nil && !fi.IsDir() {
			if err := os.WriteFile(target, nil, 0o600); err != nil {
				return fail(err)
			}
		} else if err := os.Mkdir(target, 0o700); err != nil {
			return fail(err)
		}
		flags := unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC
		if v.rro {
			flags |= unix.AT_RECURSIVE
		}
		fd, err := unix.OpenTree(unix.AT_FDCWD, v.src, uint(flags))
		if err != nil {
			return fail(fmt.Errorf("open_tree %s: %w", v.src, err))
		}
		err = setViewAttrs(fd, v)
		if err == nil {
			err = unix.MoveMount(fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH)
		}
		unix.Close(fd)
		if err != nil {
			return fail(fmt.Errorf("view of %s: %w", v.src, err))
		}
		staged = append(staged, target)
	}
	return staged, cleanup, nil
}

func setViewAttrs(fd int, v view) error {
	if v.userns != "" {
		ns, err := os.Open(v.userns)
		if err != nil {
			return err
		}
		defer ns.Close()
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(ns.Fd())}
		if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
			return fmt.Errorf("idmap: %w", err)
		}
	}
	if v.rro {
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
		if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
			return fmt.Errorf("recursive read-only: %w", err)
		}
	}
	return nil
}

// volumeViews stages the views CRI mounts need: idmapped ones for a pod
// with a user namespace (their mappings must be the pod's), recursively
// read-only ones where the runtime has no "rro". It returns the staged
// path of each such mount by index.
func volumeViews(dir string, mounts []*runtimeapi.Mount, userns *idmap, sb *runtimeapi.PodSandboxConfig, runtimeRRO bool) (map[int]string, func(), error) {
	uids, gids, _ := oci.PodIDMappings(sb)
	same := func(a []*runtimeapi.IDMapping, b []specs.LinuxIDMapping) bool {
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			if a[i].GetContainerId() != b[i].ContainerID || a[i].GetHostId() != b[i].HostID || a[i].GetLength() != b[i].Size {
				return false
			}
		}
		return true
	}
	var views []view
	var index []int
	for i, m := range mounts {
		var v view
		if len(m.GetUidMappings()) > 0 || len(m.GetGidMappings()) > 0 {
			if userns == nil || !same(m.GetUidMappings(), uids) || !same(m.GetGidMappings(), gids) {
				return nil, nil, fmt.Errorf("mounts[%d]: ID mappings that are not the pod's user namespace: %w", i, errdefs.ErrInvalidArgument)
			}
			v.userns = userns.nsPath
		}
		v.rro = m.GetRecursiveReadOnly() && !runtimeRRO
		if v.userns == "" && !v.rro {
			continue
		}
		v.src = m.GetHostPath()
		views = append(views, v)
		index = append(index, i)
	}
	if len(views) == 0 {
		return nil, func() {}, nil
	}
	staged, cleanup, err := stageViews(filepath.Join(dir, "volume-views"), views)
	if err != nil {
		return nil, nil, err
	}
	out := map[int]string{}
	for j, i := range index {
		out[i] = staged[j]
	}
	return out, cleanup, nil
}
