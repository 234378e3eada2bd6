package sandbox

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/oci"
)

// UpdateResources records a pod's new resources after an in-place resize
// (UpdatePodSandboxResources), as containerd 2.2 does: the kubelet resizes
// the pod's cgroup itself and calls this first, so that a runtime can
// refuse the resize; containerd records the values (persisted, and shown by
// verbose status), hands them to NRI plugins and changes no cgroup. husk
// has no NRI, so it validates and records. A field left nil keeps what was
// recorded.
func (m *Manager) UpdateResources(id string, overhead, resources *runtimeapi.LinuxContainerResources) error {
	if overhead == nil && resources == nil {
		return fmt.Errorf("pod sandbox %s: update resources: neither overhead nor resources given: %w", id, errdefs.ErrInvalidArgument)
	}
	for _, r := range []struct {
		field string
		res   *runtimeapi.LinuxContainerResources
	}{{"overhead", overhead}, {"resources", resources}} {
		if err := oci.ValidateResources(r.res); err != nil {
			return fmt.Errorf("pod sandbox %s: update resources: %s.%v: %w", id, r.field, err, errdefs.ErrInvalidArgument)
		}
	}
	sb, err := m.lockExisting(id)
	if err != nil {
		return err
	}
	if sb == nil {
		return fmt.Errorf("pod sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	defer sb.mu.Unlock()
	rec := &sb.rec
	if rec.State != StateReady {
		return fmt.Errorf("pod sandbox %s is %s: update resources: %w", rec.ID, strings.ToLower(string(rec.State)), errdefs.ErrFailedPrecondition)
	}
	prevOverhead, prevResources := rec.Overhead, rec.Resources
	if overhead != nil {
		rec.Overhead, _ = proto.Marshal(overhead)
	}
	if resources != nil {
		rec.Resources, _ = proto.Marshal(resources)
	}
	if err := m.persistLocked(sb); err != nil {
		rec.Overhead, rec.Resources = prevOverhead, prevResources
		return err
	}
	return nil
}

// decodeResources reads recorded resources back, wrapped as the CRI and
// containerd's verbose info show them; nil when none were recorded.
func decodeResources(b []byte) *runtimeapi.ContainerResources {
	if len(b) == 0 {
		return nil
	}
	var r runtimeapi.LinuxContainerResources
	if proto.Unmarshal(b, &r) != nil {
		return nil
	}
	return &runtimeapi.ContainerResources{Linux: &r}
}
