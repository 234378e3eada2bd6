package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// CRI Device.permissions reach the device cgroup, with runc and crun. The
// devices are nodes of char major 42 ("demo/sample use": no driver): an
// open the cgroup refuses fails with EPERM, one it lets through with ENXIO
// from the missing driver, so no real device is touched. (/dev/null and
// /dev/zero would prove nothing: runtimes allow them rwm whatever the
// spec says.) Permissions that are not a combination of r, w and m are
// refused naming the device.
func TestDevicePermissions(t *testing.T) {
	t.Parallel()
	e := containerEnv(t)
	for i, perms := range []string{"r", "rw", "w", ""} {
		mknod(t, filepath.Join(e.dir, "demo-"+perms), 42, uint32(i))
	}
	for _, handler := range []string{"runc", "crun"} {
		t.Run(handler, func(t *testing.T) {
			pod := e.podConfig("devperm-" + handler)
			podID := e.runPod(pod, handler)
			cfg := ctrConfig("dev", "sleep", "3600")
			for _, perms := range []string{"r", "rw", "w", ""} {
				cfg.Devices = append(cfg.Devices, &runtimeapi.Device{HostPath: filepath.Join(e.dir, "demo-"+perms), ContainerPath: "/dev/demo-" + perms, Permissions: perms})
			}
			id := e.run(podID, pod, cfg)
			for _, perms := range []string{"r", "rw", "w", ""} {
				e.checkDeviceAccess(id, "/dev/demo-"+perms, perms)
			}
			bad := ctrConfig("bad", "true")
			bad.Devices = []*runtimeapi.Device{{HostPath: "/dev/null", ContainerPath: "/dev/x", Permissions: "rwx"}}
			_, err := e.rt.CreateContainer(e.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: bad, SandboxConfig: pod})
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `devices[0].permissions "rwx" of device /dev/x`) {
				t.Errorf("permissions rwx: %v", err)
			}
			e.stopRemove(podID)
			e.assertNoLeaks(podID, id)
		})
	}
}

// checkDeviceAccess checks that the device cgroup lets the container open
// path (a node of a device with no driver) for reading and for writing
// exactly as perms says ("" is rwm): refused is EPERM, let through ENXIO.
func (e *env) checkDeviceAccess(id, path, perms string) {
	e.t.Helper()
	if perms == "" {
		perms = "rwm"
	}
	for _, op := range []struct{ access, cmd string }{{"r", "cat " + path}, {"w", "echo x > " + path}} {
		want := "Operation not permitted"
		if strings.Contains(perms, op.access) {
			want = "No such device or address"
		}
		if r := e.exec(id, 10, "sh", "-c", op.cmd); !strings.Contains(string(r.Stderr), want) {
			e.t.Errorf("%s with permissions %q: %q, want %q", op.cmd, perms, r.Stderr, want)
		}
	}
}

func mknod(t *testing.T, path string, major, minor uint32) {
	t.Helper()
	if err := unix.Mknod(path, unix.S_IFCHR|0o666, int(unix.Mkdev(major, minor))); err != nil {
		t.Fatal(err)
	}
}
