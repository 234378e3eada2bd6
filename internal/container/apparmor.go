package container

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// appArmorEnabled reports whether the kernel has AppArmor switched on.
func appArmorEnabled() bool {
	b, err := os.ReadFile("/sys/module/apparmor/parameters/enabled")
	return err == nil && bytes.HasPrefix(b, []byte("Y"))
}

// applyAppArmor applies a Localhost AppArmor profile by name. Without
// AppArmor in the kernel a Localhost profile is an error that says so,
// while RuntimeDefault and Unconfined need nothing (as in containerd).
func applyAppArmor(spec *specs.Spec, sc *runtimeapi.LinuxContainerSecurityContext, enabled bool) error {
	kind, ref := runtimeapi.SecurityProfile_Unconfined, ""
	if p := sc.GetApparmor(); p != nil {
		kind, ref = p.GetProfileType(), p.GetLocalhostRef()
	} else {
		//lint:ignore SA1019 older kubelets and crictl still send it
		switch name := sc.GetApparmorProfile(); {
		case name == "runtime/default":
			kind = runtimeapi.SecurityProfile_RuntimeDefault
		case strings.HasPrefix(name, "localhost/"):
			kind, ref = runtimeapi.SecurityProfile_Localhost, strings.TrimPrefix(name, "localhost/")
		case name != "" && name != "unconfined":
			return fmt.Errorf("apparmor_profile %q: not a known profile: %w", name, errdefs.ErrInvalidArgument)
		}
	}
	if kind != runtimeapi.SecurityProfile_Localhost || sc.GetPrivileged() {
		return nil
	}
	if !enabled {
		return fmt.Errorf("AppArmor profile %q: AppArmor is not enabled in this node's kernel: %w", ref, errdefs.ErrFailedPrecondition)
	}
	if ref == "" {
		return fmt.Errorf("AppArmor localhost profile: no profile name: %w", errdefs.ErrInvalidArgument)
	}
	spec.Process.ApparmorProfile = ref
	return nil
}
