package container

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// containerDevices resolves the CRI devices against the host. A
// privileged container sees the node's devices too, as with containerd
// and CRI-O.
func containerDevices(cfg *runtimeapi.ContainerConfig) ([]specs.LinuxDevice, error) {
	devices, err := resolveDevices(cfg.GetDevices())
	if err != nil {
		return nil, err
	}
	if cfg.GetLinux().GetSecurityContext().GetPrivileged() {
		devices = append(hostDevices(), devices...)
	}
	return devices, nil
}

// resolveDevices reads each device node's type, numbers, mode and owner.
func resolveDevices(devs []*runtimeapi.Device) ([]specs.LinuxDevice, error) {
	var out []specs.LinuxDevice
	for i, d := range devs {
		var st unix.Stat_t
		if err := unix.Stat(d.GetHostPath(), &st); err != nil {
			return nil, fmt.Errorf("devices[%d]: host path %s: %v: %w", i, d.GetHostPath(), err, errdefs.ErrInvalidArgument)
		}
		var kind string
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFCHR:
			kind = "c"
		case unix.S_IFBLK:
			kind = "b"
		default:
			return nil, fmt.Errorf("devices[%d]: %s is not a device: %w", i, d.GetHostPath(), errdefs.ErrInvalidArgument)
		}
		mode := os.FileMode(st.Mode & 0o777)
		uid, gid := st.Uid, st.Gid
		out = append(out, specs.LinuxDevice{
			Path: d.GetContainerPath(), Type: kind,
			Major: int64(unix.Major(uint64(st.Rdev))), Minor: int64(unix.Minor(uint64(st.Rdev))),
			FileMode: &mode, UID: &uid, GID: &gid,
		})
	}
	return out, nil
}

// hostDevices lists the node's device nodes under /dev, leaving out the
// filesystems a container gets its own of.
func hostDevices() []specs.LinuxDevice {
	var out []specs.LinuxDevice
	_ = filepath.WalkDir("/dev", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() {
			switch p {
			case "/dev/pts", "/dev/shm", "/dev/mqueue", "/dev/.lxc", "/dev/.lxd-mounts":
				return filepath.SkipDir
			}
			return nil
		}
		if p == "/dev/console" || d.Type()&os.ModeDevice == 0 {
			return nil
		}
		if devs, err := resolveDevices([]*runtimeapi.Device{{HostPath: p, ContainerPath: p}}); err == nil {
			out = append(out, devs...)
		}
		return nil
	})
	return out
}
