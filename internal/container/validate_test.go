package container

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestValidateConfig(t *testing.T) {
	valid := func() *runtimeapi.ContainerConfig {
		return &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "c"},
			Image:    &runtimeapi.ImageSpec{Image: "busybox"},
			LogPath:  "c/0.log",
			Linux:    &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{}},
		}
	}
	tests := []struct {
		name   string
		mutate func(*runtimeapi.ContainerConfig)
		field  string // "" = valid
	}{
		{"valid", func(*runtimeapi.ContainerConfig) {}, ""},
		{"no metadata", func(c *runtimeapi.ContainerConfig) { c.Metadata = nil }, "metadata"},
		{"empty name", func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = "" }, "metadata.name"},
		{"slash in name", func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = "a/b" }, "metadata.name"},
		{"underscore in name", func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = "a_b" }, "metadata.name"},
		{"no image", func(c *runtimeapi.ContainerConfig) { c.Image.Image = "" }, "image.image"},
		{"absolute log path", func(c *runtimeapi.ContainerConfig) { c.LogPath = "/etc/passwd" }, "log_path"},
		{"climbing log path", func(c *runtimeapi.ContainerConfig) { c.LogPath = "a/../../x" }, "log_path"},
		{"relative mount", func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "data", HostPath: "/srv"}}
		}, "mounts[0].container_path"},
		{"bad env key", func(c *runtimeapi.ContainerConfig) { c.Envs = []*runtimeapi.KeyValue{{Key: "A=B"}} }, "envs[0].key"},
		{"group without user", func(c *runtimeapi.ContainerConfig) {
			c.Linux.SecurityContext.RunAsGroup = &runtimeapi.Int64Value{Value: 5}
		}, "run_as_group"},
		{"rro on a writable mount", func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/d", HostPath: "/srv", RecursiveReadOnly: true}}
		}, "recursive_read_only"},
		{"rro with propagation", func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/d", HostPath: "/srv", Readonly: true, RecursiveReadOnly: true,
				Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER}}
		}, "recursive_read_only"},
		{"rro", func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/d", HostPath: "/srv", Readonly: true, RecursiveReadOnly: true}}
		}, ""},
		{"image mount", func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/v", Readonly: true, Image: &runtimeapi.ImageSpec{Image: "sha256:ab"}, ImageSubPath: "a/../b"}}
		}, ""},
		{"image mount with a host path", func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/v", HostPath: "/srv", Readonly: true, Image: &runtimeapi.ImageSpec{Image: "x"}}}
		}, "mounts[0].host_path"},
		{"writable image mount", func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/v", Image: &runtimeapi.ImageSpec{Image: "x"}}}
		}, "mounts[0].readonly"},
		{"image mount without image", func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/v", Readonly: true, Image: &runtimeapi.ImageSpec{}}}
		}, "mounts[0].image.image"},
		{"image sub path climbing out", func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/v", Readonly: true, Image: &runtimeapi.ImageSpec{Image: "x"}, ImageSubPath: "a/../../etc"}}
		}, `mounts[0].image_sub_path "a/../../etc" leaves the image`},
		{"absolute image sub path", func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/v", Readonly: true, Image: &runtimeapi.ImageSpec{Image: "x"}, ImageSubPath: "/etc"}}
		}, "mounts[0].image_sub_path"},
		{"device permissions", func(c *runtimeapi.ContainerConfig) {
			c.Devices = []*runtimeapi.Device{{HostPath: "/dev/null", ContainerPath: "/dev/a", Permissions: "r"}, {HostPath: "/dev/null", ContainerPath: "/dev/b"}}
		}, ""},
		{"bad device permissions", func(c *runtimeapi.ContainerConfig) {
			c.Devices = []*runtimeapi.Device{{HostPath: "/dev/null", ContainerPath: "/dev/a", Permissions: "rx"}}
		}, `devices[0].permissions "rx" of device /dev/a`},
		{"stop signal", func(c *runtimeapi.ContainerConfig) { c.StopSignal = runtimeapi.Signal_SIGNAL_SIGRTMAX }, ""},
		{"unknown stop signal", func(c *runtimeapi.ContainerConfig) { c.StopSignal = 66 }, "stop_signal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.mutate(c)
			err := ValidateConfig(c)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("valid config refused: %v", err)
				}
				return
			}
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tt.field) {
				t.Errorf("err = %v, want InvalidArgument naming %s", err, tt.field)
			}
		})
	}
}
