package container

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/oci"
	"github.com/huskrt/husk/internal/proc"
)

// specInput is what the OCI spec is made of that is known once the
// record is: the sandbox's namespaces and files, the image's config, the
// cgroup. The later steps of Create fill in the rest (rootfs, user,
// devices, target PID, mount sources).
func (m *Manager) specInput(req *createRequest, rec *Record) oci.ContainerSpec {
	sb := req.sandbox
	return oci.ContainerSpec{
		ID: rec.ID, SandboxID: sb.ID, Handler: sb.Handler, Sandbox: sb.Config,
		Image: req.imageConfig, ImageName: rec.ImageName,
		InfraPID: sb.InfraPID, NetnsPath: sb.NetnsPath, ShmPath: sb.ShmPath,
		ResolvConf: filepath.Join(sb.Dir, "resolv.conf"), Hostname: filepath.Join(sb.Dir, "hostname"),
		Hosts: filepath.Join(sb.Dir, "hosts"), CgroupsPath: rec.CgroupsPath,
		AllCapabilities: m.allCaps, RuntimeRRO: req.runtime.RecursiveReadOnly,
	}
}

// targetPID is, for a pid=TARGET container, the process of the running
// container of the same sandbox whose PID namespace it joins; 0 for any
// other PID mode.
func (m *Manager) targetPID(cfg *runtimeapi.ContainerConfig, sandboxID string) (int, error) {
	ns := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	if ns.GetPid() != runtimeapi.NamespaceMode_TARGET {
		return 0, nil
	}
	id := ns.GetTargetId()
	if id == "" {
		return 0, fmt.Errorf("namespace_options.target_id is empty with pid mode TARGET: %w", errdefs.ErrInvalidArgument)
	}
	t, err := m.index.Get(id)
	if err != nil {
		return 0, fmt.Errorf("namespace_options.target_id: %w", err)
	}
	v := t.view()
	if v.SandboxID != sandboxID {
		return 0, fmt.Errorf("namespace_options.target_id: container %s is in another pod: %w", v.ID, errdefs.ErrInvalidArgument)
	}
	if v.State != StateRunning {
		return 0, fmt.Errorf("namespace_options.target_id: container %s is not running: %w", v.ID, errdefs.ErrFailedPrecondition)
	}
	return v.PID, nil
}

// buildSpec makes the container's OCI spec (internal/oci) and applies its
// seccomp filter and AppArmor profile. Its oom_score_adj is raised to
// what huskd may give (proc.ClampOOMScoreAdj): a Guaranteed pod's -997
// fails to start where huskd lacks CAP_SYS_RESOURCE.
func buildSpec(cfg *runtimeapi.ContainerConfig, in oci.ContainerSpec, appArmor bool) (*specs.Spec, error) {
	spec, err := oci.AppSpec(cfg, in)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}
	if p := spec.Process; p.OOMScoreAdj != nil {
		v := proc.ClampOOMScoreAdj(*p.OOMScoreAdj)
		p.OOMScoreAdj = &v
	}
	sc := cfg.GetLinux().GetSecurityContext()
	if err := applySeccomp(spec, sc); err != nil {
		return nil, err
	}
	if err := applyAppArmor(spec, sc, appArmor); err != nil {
		return nil, err
	}
	return spec, nil
}

// writeBundle writes the spec as the bundle's config.json and makes the
// CRI log's directory: what the runtime and the monitor need on disk.
func (m *Manager) writeBundle(rec *Record, spec *specs.Spec) error {
	if rec.LogPath != "" {
		if err := os.MkdirAll(filepath.Dir(rec.LogPath), 0o755); err != nil {
			return fmt.Errorf("log directory: %w", err)
		}
	}
	bundle := m.bundleDir(rec.ID)
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("spec: %w", err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		return fmt.Errorf("spec: %w", err)
	}
	return nil
}
