package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// seccompProfile reads the CRI's seccomp choice: the security profile, or
// the deprecated profile path ("runtime/default", "docker/default",
// "unconfined", "localhost/<path>").
func seccompProfile(sc *runtimeapi.LinuxContainerSecurityContext) (runtimeapi.SecurityProfile_ProfileType, string, error) {
	if p := sc.GetSeccomp(); p != nil {
		return p.GetProfileType(), p.GetLocalhostRef(), nil
	}
	//lint:ignore SA1019 older kubelets and crictl still send it
	switch path := sc.GetSeccompProfilePath(); {
	case path == "" || path == "unconfined":
		return runtimeapi.SecurityProfile_Unconfined, "", nil
	case path == "runtime/default" || path == "docker/default":
		return runtimeapi.SecurityProfile_RuntimeDefault, "", nil
	case strings.HasPrefix(path, "localhost/"):
		return runtimeapi.SecurityProfile_Localhost, strings.TrimPrefix(path, "localhost/"), nil
	default:
		return 0, "", fmt.Errorf("seccomp_profile_path %q: not a known profile: %w", path, errdefs.ErrInvalidArgument)
	}
}

// applySeccomp sets the spec's seccomp filter: RuntimeDefault is the
// default profile of moby/profiles (containerd's and Docker's), adjusted to
// the container's capabilities; Localhost a profile file of the node in the
// same format. Privileged containers run unconfined, as in containerd.
func applySeccomp(spec *specs.Spec, sc *runtimeapi.LinuxContainerSecurityContext) error {
	if sc.GetPrivileged() {
		return nil
	}
	kind, ref, err := seccompProfile(sc)
	if err != nil {
		return err
	}
	switch kind {
	case runtimeapi.SecurityProfile_RuntimeDefault:
		p, err := seccomp.GetDefaultProfile(spec)
		if err != nil {
			return fmt.Errorf("default seccomp profile: %w", err)
		}
		spec.Linux.Seccomp = p
	case runtimeapi.SecurityProfile_Localhost:
		if !filepath.IsAbs(ref) {
			return fmt.Errorf("seccomp localhost profile %q: not an absolute path: %w", ref, errdefs.ErrInvalidArgument)
		}
		body, err := os.ReadFile(ref)
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("seccomp localhost profile %s: no such file on the node: %w", ref, errdefs.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("seccomp localhost profile %s: %w", ref, err)
		}
		p, err := seccomp.LoadProfile(string(body), spec)
		if err != nil {
			return fmt.Errorf("seccomp localhost profile %s: %v: %w", ref, err, errdefs.ErrInvalidArgument)
		}
		spec.Linux.Seccomp = p
	}
	return nil
}
