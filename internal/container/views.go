package container

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
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
		if err := mountView(target, v); err != nil {
			return fail(err)
		}
		staged = append(staged, target)
	}
	return staged, cleanup, nil
}

// mountView mounts a view of v.src at target, which it makes: a file (a
// volume can be one) is mounted on a file.
func mountView(target string, v view) error {
	if fi, err := os.Stat(v.src); err == nil && !fi.IsDir() {
		if err := os.WriteFile(target, nil, 0o600); err != nil {
			return err
		}
	} else if err := os.Mkdir(target, 0o700); err != nil && !os.IsExist(err) {
		return err
	}
	flags := unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC
	if v.rro {
		flags |= unix.AT_RECURSIVE
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, v.src, uint(flags))
	if err != nil {
		return fmt.Errorf("open_tree %s: %w", v.src, err)
	}
	defer unix.Close(fd)
	if err := setViewAttrs(fd, v); err != nil {
		return fmt.Errorf("view of %s: %w", v.src, err)
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("view of %s: %w", v.src, err)
	}
	return nil
}

// setViewAttrs first cuts the clone from the source's peer group: a clone
// of a shared mount (the kubelet's pod dirs are rshared) is its peer, and
// detaching the view would unmount the source's submounts too. A slave
// still receives the host's new mounts (HostToContainer); a recursively
// read-only view is private, as the CRI asks of rro.
func setViewAttrs(fd int, v view) error {
	prop := uint64(unix.MS_SLAVE)
	if v.rro {
		prop = unix.MS_PRIVATE
	}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &unix.MountAttr{Propagation: prop}); err != nil {
		return fmt.Errorf("propagation: %w", err)
	}
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
