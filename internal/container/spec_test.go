package container

import (
	"testing"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/lifecycle"
)

func TestTargetPID(t *testing.T) {
	m := &Manager{index: lifecycle.NewIndex[*Container]("container")}
	add := func(id, sandboxID string, state State, pid int) {
		c := &Container{rec: Record{ID: id, Name: "name-" + id, SandboxID: sandboxID, State: state, PID: pid}}
		c.snapshot.Publish(&c.rec)
		m.index.Add(id, c.rec.Name, c)
	}
	add("aaaa1111", "pod1", StateRunning, 42)
	add("bbbb2222", "pod1", StateCreated, 43)
	add("cccc3333", "pod2", StateRunning, 44)

	cfg := func(mode runtimeapi.NamespaceMode, target string) *runtimeapi.ContainerConfig {
		return &runtimeapi.ContainerConfig{Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Pid: mode, TargetId: target},
		}}}
	}
	tests := []struct {
		name    string
		cfg     *runtimeapi.ContainerConfig
		want    int
		errKind func(error) bool // nil = no error
	}{
		{"no security context", &runtimeapi.ContainerConfig{}, 0, nil},
		{"pod PID namespace", cfg(runtimeapi.NamespaceMode_POD, "aaaa1111"), 0, nil},
		{"target running in the pod", cfg(runtimeapi.NamespaceMode_TARGET, "aaaa1111"), 42, nil},
		{"target by ID prefix", cfg(runtimeapi.NamespaceMode_TARGET, "aaaa"), 42, nil},
		{"no target", cfg(runtimeapi.NamespaceMode_TARGET, ""), 0, errdefs.IsInvalidArgument},
		{"unknown target", cfg(runtimeapi.NamespaceMode_TARGET, "ffff"), 0, errdefs.IsNotFound},
		{"target in another pod", cfg(runtimeapi.NamespaceMode_TARGET, "cccc3333"), 0, errdefs.IsInvalidArgument},
		{"target not running", cfg(runtimeapi.NamespaceMode_TARGET, "bbbb2222"), 0, errdefs.IsFailedPrecondition},
	}
	for _, tt := range tests {
		got, err := m.targetPID(tt.cfg, "pod1")
		switch {
		case tt.errKind == nil && (err != nil || got != tt.want):
			t.Errorf("%s: got %d, %v; want %d", tt.name, got, err, tt.want)
		case tt.errKind != nil && !tt.errKind(err):
			t.Errorf("%s: err = %v, want another kind", tt.name, err)
		}
	}
}
