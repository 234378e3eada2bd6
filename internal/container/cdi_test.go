package container

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestCDIDeviceNames(t *testing.T) {
	tests := []struct {
		name    string
		devices []string
		ann     map[string]string
		want    []string
		wantErr string
	}{
		{"none", nil, nil, nil, ""},
		{"field then annotations, each once", []string{"v.com/c=a", "v.com/c=b", "v.com/c=a"},
			map[string]string{"cdi.k8s.io/x": "v.com/c=b,v.com/c=d", "cdi.k8s.io/w": "v.com/c=c", "other": "v.com/c=z"},
			[]string{"v.com/c=a", "v.com/c=b", "v.com/c=c", "v.com/c=d"}, ""},
		{"unqualified name", []string{"v.com/c=a", "gpu0"}, nil, nil, `cdi_devices[1]: "gpu0" is not a qualified CDI device name`},
		{"unqualified annotation", nil, map[string]string{"cdi.k8s.io/x": "gpu0"}, nil, `annotations cdi.k8s.io/*: invalid CDI device name "gpu0"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &runtimeapi.ContainerConfig{Annotations: tt.ann}
			for _, d := range tt.devices {
				cfg.CDIDevices = append(cfg.CDIDevices, &runtimeapi.CDIDevice{Name: d})
			}
			got, err := cdiDeviceNames(cfg)
			if tt.wantErr != "" {
				if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want InvalidArgument with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("cdiDeviceNames = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

const testCDISpec = `{"cdiVersion": "0.7.0", "kind": "husk.test/dev",
 "containerEdits": {"env": ["FROM_SPEC=1"], "additionalGids": [4242],
   "mounts": [{"hostPath": "/srv/x", "containerPath": "/x", "options": ["ro", "bind"]}],
   "hooks": [{"hookName": "createRuntime", "path": "/bin/true"}]},
 "devices": [{"name": "null", "containerEdits": {"env": ["DEV=null"],
   "deviceNodes": [{"path": "/dev/cdi-null", "hostPath": "/dev/null", "permissions": "rw"}]}}]}`

// The edits of a device and of its spec reach the OCI spec; a spec written
// after the registry was made is seen; what cannot be injected is an error
// naming the device and the spec files.
func TestCDIInject(t *testing.T) {
	dirs := []string{filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")}
	r := newCDIDevices(dirs)
	if err := os.MkdirAll(dirs[1], 0o755); err != nil {
		t.Fatal(err)
	}
	specFile := filepath.Join(dirs[1], "test.json")
	if err := os.WriteFile(specFile, []byte(testCDISpec), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := &specs.Spec{Process: &specs.Process{}, Linux: &specs.Linux{Resources: &specs.LinuxResources{}}}
	if err := r.inject(spec, []string{"husk.test/dev=null"}); err != nil {
		t.Fatal(err)
	}
	var rule *specs.LinuxDeviceCgroup
	for i := range spec.Linux.Resources.Devices {
		rule = &spec.Linux.Resources.Devices[i]
	}
	switch {
	case !slices.Contains(spec.Process.Env, "FROM_SPEC=1") || !slices.Contains(spec.Process.Env, "DEV=null"):
		t.Errorf("env = %q", spec.Process.Env)
	case len(spec.Linux.Devices) != 1 || spec.Linux.Devices[0].Path != "/dev/cdi-null" || spec.Linux.Devices[0].Major != 1 || spec.Linux.Devices[0].Minor != 3:
		t.Errorf("devices = %+v", spec.Linux.Devices)
	case rule == nil || rule.Access != "rw" || !rule.Allow:
		t.Errorf("device cgroup rule = %+v", rule)
	case len(spec.Mounts) != 1 || spec.Mounts[0].Destination != "/x":
		t.Errorf("mounts = %+v", spec.Mounts)
	case spec.Hooks == nil || len(spec.Hooks.CreateRuntime) != 1:
		t.Errorf("hooks = %+v", spec.Hooks)
	case !slices.Contains(spec.Process.User.AdditionalGids, 4242):
		t.Errorf("additional gids = %v", spec.Process.User.AdditionalGids)
	}

	err := r.inject(&specs.Spec{}, []string{"husk.test/dev=gone"})
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), `"husk.test/dev=gone" (not in `+specFile+")") {
		t.Errorf("unknown device: %v", err)
	}
	broken := filepath.Join(dirs[0], "broken.yaml")
	if err := os.MkdirAll(dirs[0], 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(broken, []byte("cdiVersion: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = r.inject(&specs.Spec{}, []string{"broken.test/dev=x"})
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), `unknown CDI devices in the spec dirs `+strings.Join(dirs, ", ")+`: "broken.test/dev=x" (no spec file of broken.test/dev)`) ||
		!strings.Contains(err.Error(), "spec files with errors: "+broken+": ") {
		t.Errorf("device of a broken spec: %v", err)
	}
	if err := newCDIDevices(nil).inject(&specs.Spec{}, []string{"husk.test/dev=null"}); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "spec_dirs") {
		t.Errorf("no spec dirs: %v", err)
	}
}
