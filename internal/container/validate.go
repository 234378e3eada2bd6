package container

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/oci"
)

// ValidateConfig checks what is used as names and paths; the errors name
// the field.
func ValidateConfig(cfg *runtimeapi.ContainerConfig) error {
	bad := func(field, why string) error {
		return fmt.Errorf("container config: %s %s: %w", field, why, errdefs.ErrInvalidArgument)
	}
	if cfg == nil {
		return bad("config", "is missing")
	}
	name := cfg.GetMetadata().GetName()
	switch {
	case cfg.GetMetadata() == nil:
		return bad("metadata", "is missing")
	case name == "":
		return bad("metadata.name", "is empty")
	case len(name) > 253 || strings.ContainsAny(name, "/\x00_") || name == "." || name == "..":
		return bad("metadata.name", fmt.Sprintf("%q is not a valid name", name))
	case cfg.GetImage().GetImage() == "":
		return bad("image.image", "is empty")
	}
	if lp := cfg.GetLogPath(); lp != "" {
		clean := filepath.Clean(lp)
		if filepath.IsAbs(lp) || clean == ".." || strings.HasPrefix(clean, "../") || strings.ContainsRune(lp, 0) {
			return bad("log_path", fmt.Sprintf("%q leaves the pod's log directory", lp))
		}
	}
	for i, m := range cfg.GetMounts() {
		if !filepath.IsAbs(m.GetContainerPath()) {
			return bad(fmt.Sprintf("mounts[%d].container_path", i), fmt.Sprintf("%q is not absolute", m.GetContainerPath()))
		}
		switch {
		case isImageMount(m):
			if field, why := imageMountProblem(m); field != "" {
				return bad(fmt.Sprintf("mounts[%d].%s", i, field), why)
			}
		case m.GetImage() != nil && m.GetHostPath() == "":
			return bad(fmt.Sprintf("mounts[%d].image.image", i), "is empty, and so is host_path")
		case !filepath.IsAbs(m.GetHostPath()):
			return bad(fmt.Sprintf("mounts[%d].host_path", i), fmt.Sprintf("%q is not absolute", m.GetHostPath()))
		}
		if _, ok := runtimeapi.MountPropagation_name[int32(m.GetPropagation())]; !ok {
			return bad(fmt.Sprintf("mounts[%d].propagation", i), "is unknown")
		}
		if m.GetRecursiveReadOnly() {
			// The kernel cannot keep submounts read-only while
			// propagation adds new ones; a writable mount cannot be
			// recursively read-only.
			if !m.GetReadonly() {
				return bad(fmt.Sprintf("mounts[%d].recursive_read_only", i), "needs readonly")
			}
			if m.GetPropagation() != runtimeapi.MountPropagation_PROPAGATION_PRIVATE {
				return bad(fmt.Sprintf("mounts[%d].recursive_read_only", i), "needs private propagation")
			}
		}
	}
	if sc := cfg.GetLinux().GetSecurityContext(); sc.GetRunAsGroup() != nil && sc.GetRunAsUser() == nil && sc.GetRunAsUsername() == "" {
		return bad("linux.security_context.run_as_group", "is set without run_as_user or run_as_username")
	}
	for i, d := range cfg.GetDevices() {
		if _, ok := oci.DeviceAccess(d.GetPermissions()); !ok {
			return bad(fmt.Sprintf("devices[%d].permissions", i), fmt.Sprintf("%q of device %s is not a combination of r, w and m", d.GetPermissions(), d.GetContainerPath()))
		}
	}
	if _, ok := runtimeapi.Signal_name[int32(cfg.GetStopSignal())]; !ok {
		return bad("stop_signal", fmt.Sprintf("%d is not a signal of the CRI", cfg.GetStopSignal()))
	}
	for i, e := range cfg.GetEnvs() {
		if e.GetKey() == "" || strings.ContainsAny(e.GetKey(), "=\x00") {
			return bad(fmt.Sprintf("envs[%d].key", i), fmt.Sprintf("%q is not a valid variable name", e.GetKey()))
		}
	}
	return nil
}
