package container

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestResolveDevices(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host    string
		refused string // "" = resolved; else a word of the error
	}{
		{"/dev/null", ""},
		{file, "is not a device"},
		{"/dev/no-such-device", "host path"},
	}
	for _, tt := range tests {
		devs, err := resolveDevices([]*runtimeapi.Device{{HostPath: tt.host, ContainerPath: "/dev/x"}})
		if tt.refused != "" {
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tt.refused) || !strings.Contains(err.Error(), "devices[0]") {
				t.Errorf("%s: err = %v, want InvalidArgument naming devices[0] and %q", tt.host, err, tt.refused)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tt.host, err)
		}
		// /dev/null is character device 1:3 on every Linux.
		d := devs[0]
		if len(devs) != 1 || d.Path != "/dev/x" || d.Type != "c" || d.Major != 1 || d.Minor != 3 || d.FileMode == nil || *d.FileMode&0o666 != 0o666 {
			t.Errorf("%s resolved to %+v, want /dev/x c 1:3 rw for all", tt.host, devs)
		}
	}
}

// Only a privileged container gets the node's devices.
func TestContainerDevicesPrivileged(t *testing.T) {
	cfg := func(privileged bool) *runtimeapi.ContainerConfig {
		return &runtimeapi.ContainerConfig{
			Devices: []*runtimeapi.Device{{HostPath: "/dev/null", ContainerPath: "/dev/mine"}},
			Linux:   &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{Privileged: privileged}},
		}
	}
	plain, err := containerDevices(cfg(false))
	if err != nil || len(plain) != 1 {
		t.Fatalf("unprivileged: %d devices, %v; want only the one asked for", len(plain), err)
	}
	priv, err := containerDevices(cfg(true))
	if err != nil {
		t.Fatal(err)
	}
	var null, mine bool
	for _, d := range priv {
		null = null || d.Path == "/dev/null"
		mine = mine || d.Path == "/dev/mine"
	}
	if !null || !mine {
		t.Errorf("privileged: /dev/null %v, /dev/mine %v in %d devices; want both", null, mine, len(priv))
	}
}
