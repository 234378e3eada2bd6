// Package oci turns CRI configs into OCI runtime specs. Everything here is a
// pure function of its inputs, so it is tested without root.
package oci

import (
	"fmt"
	"path"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Annotations sandboxed runtimes (kata, gVisor) key on to tell the pod's
// sandbox container from its app containers.
const (
	AnnotationContainerType    = "io.kubernetes.cri.container-type"
	AnnotationSandboxID        = "io.kubernetes.cri.sandbox-id"
	AnnotationSandboxName      = "io.kubernetes.cri.sandbox-name"
	AnnotationSandboxNamespace = "io.kubernetes.cri.sandbox-namespace"
	AnnotationSandboxUID       = "io.kubernetes.cri.sandbox-uid"
	AnnotationSandboxLogDir    = "io.kubernetes.cri.sandbox-log-directory"
	AnnotationRuntimeHandler   = "io.kubernetes.cri.runtime-handler"
	ContainerTypeSandbox       = "sandbox"
	ContainerTypeContainer     = "container"
)

// SpecVersion is the runtime-spec version written into bundles: the newest
// that Debian's runc 1.1 and crun 1.8 both accept (crun rejects versions it
// does not know, such as the 1.3.0 of the Go types).
const SpecVersion = "1.0.2"

// InfraPath is where the infra binary sits in its root filesystem.
const InfraPath = "/husk-pause"

// SandboxSpec is what the infra container needs beyond the CRI config.
type SandboxSpec struct {
	ID      string
	Handler string
	// RootfsPath is the read-only root holding only the infra binary.
	RootfsPath string
	// NetnsPath is the pinned network namespace; empty for host network.
	NetnsPath string
	// ShmPath is the pod's /dev/shm tmpfs on the host; empty means the
	// infra gets a private one (host IPC).
	ShmPath string
	// CgroupsPath is the runtime's cgroupsPath (cgroupfs path or systemd
	// slice:prefix:name).
	CgroupsPath string
	// OOMScoreAdj is already clamped to what the node allows.
	OOMScoreAdj int
}

// InfraSpec builds the OCI spec of a pod's infra container: pause as PID 1 of
// its own PID namespace (or the host's), holding the pod's IPC, UTS and
// network namespaces. It gets no capabilities: pause only waits.
func InfraSpec(cfg *runtimeapi.PodSandboxConfig, s SandboxSpec) *specs.Spec {
	nsOpts := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	hostNet := nsOpts.GetNetwork() == runtimeapi.NamespaceMode_NODE
	hostPID := nsOpts.GetPid() == runtimeapi.NamespaceMode_NODE
	hostIPC := nsOpts.GetIpc() == runtimeapi.NamespaceMode_NODE

	namespaces := []specs.LinuxNamespace{{Type: specs.MountNamespace}}
	if !hostPID {
		namespaces = append(namespaces, specs.LinuxNamespace{Type: specs.PIDNamespace})
	}
	if !hostIPC {
		namespaces = append(namespaces, specs.LinuxNamespace{Type: specs.IPCNamespace})
	}
	// A host-network pod also keeps the node's hostname, as the kubelet
	// expects (containerd and CRI-O do the same).
	if !hostNet {
		namespaces = append(namespaces,
			specs.LinuxNamespace{Type: specs.UTSNamespace},
			specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: s.NetnsPath})
	}

	mounts := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
	}
	if s.ShmPath != "" {
		mounts = append(mounts, specs.Mount{Destination: "/dev/shm", Type: "bind", Source: s.ShmPath,
			Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"}})
	}

	md := cfg.GetMetadata()
	annotations := map[string]string{
		AnnotationContainerType:    ContainerTypeSandbox,
		AnnotationSandboxID:        s.ID,
		AnnotationSandboxName:      md.GetName(),
		AnnotationSandboxNamespace: md.GetNamespace(),
		AnnotationSandboxUID:       md.GetUid(),
		AnnotationSandboxLogDir:    cfg.GetLogDirectory(),
		AnnotationRuntimeHandler:   s.Handler,
	}

	oomScoreAdj := s.OOMScoreAdj
	shares := uint64(2) // the infra only waits: give it the smallest CPU weight
	spec := &specs.Spec{
		Version: SpecVersion,
		Process: &specs.Process{
			Args: []string{InfraPath},
			// GOMAXPROCS from the start, not only from main(): fewer
			// threads and less memory in a process paid per pod.
			Env:             []string{"PATH=/", "GOMAXPROCS=1"},
			Cwd:             "/",
			NoNewPrivileges: true,
			OOMScoreAdj:     &oomScoreAdj,
			Capabilities:    &specs.LinuxCapabilities{},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
		},
		Root:        &specs.Root{Path: s.RootfsPath, Readonly: true},
		Mounts:      mounts,
		Annotations: annotations,
		Linux: &specs.Linux{
			Namespaces:  namespaces,
			CgroupsPath: s.CgroupsPath,
			Resources: &specs.LinuxResources{
				CPU: &specs.LinuxCPU{Shares: &shares},
			},
			Sysctl:        cfg.GetLinux().GetSysctls(),
			MaskedPaths:   DefaultMaskedPaths(),
			ReadonlyPaths: DefaultReadonlyPaths(),
		},
	}
	if !hostNet {
		spec.Hostname = cfg.GetHostname()
	}
	if uids, gids, ok := PodIDMappings(cfg); ok {
		spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		spec.Linux.UIDMappings, spec.Linux.GIDMappings = uids, gids
	}
	return spec
}

// PodIDMappings returns the pod's user namespace mappings when it asks for
// a user namespace of its own (userns_options mode POD).
func PodIDMappings(cfg *runtimeapi.PodSandboxConfig) (uids, gids []specs.LinuxIDMapping, ok bool) {
	u := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetUsernsOptions()
	if u == nil || u.GetMode() != runtimeapi.NamespaceMode_POD {
		return nil, nil, false
	}
	conv := func(in []*runtimeapi.IDMapping) []specs.LinuxIDMapping {
		out := make([]specs.LinuxIDMapping, 0, len(in))
		for _, m := range in {
			out = append(out, specs.LinuxIDMapping{ContainerID: m.GetContainerId(), HostID: m.GetHostId(), Size: m.GetLength()})
		}
		return out
	}
	return conv(u.GetUids()), conv(u.GetGids()), true
}

// DefaultMaskedPaths are the kubelet's defaults (k8s.io/kubernetes
// pkg/securitycontext), hidden from unprivileged containers.
func DefaultMaskedPaths() []string {
	return []string{
		"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
		"/sys/firmware", "/sys/devices/virtual/powercap",
	}
}

// DefaultReadonlyPaths are the kubelet's read-only defaults.
func DefaultReadonlyPaths() []string {
	return []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
}

// CgroupParent returns the effective cgroup parent of a pod for the given
// driver: parent, else the driver's default (the root for cgroupfs,
// system.slice for systemd). A parent the driver cannot use is an error.
func CgroupParent(driver, parent string) (string, error) {
	switch driver {
	case "systemd":
		if parent == "" {
			parent = "system.slice"
		}
		if strings.ContainsAny(parent, "/:") || !strings.HasSuffix(parent, ".slice") {
			return "", fmt.Errorf("cgroup parent %q: not a systemd slice", parent)
		}
		return parent, nil
	default:
		if parent == "" {
			parent = "/"
		}
		if !strings.HasPrefix(parent, "/") {
			return "", fmt.Errorf("cgroup parent %q: not an absolute cgroupfs path", parent)
		}
		clean := path.Clean(parent)
		if clean != strings.TrimSuffix(parent, "/") && parent != "/" {
			return "", fmt.Errorf("cgroup parent %q: not a clean path", parent)
		}
		return clean, nil
	}
}

// CgroupsPath returns the runtime cgroupsPath of container id under parent
// for the given driver: a path for cgroupfs, slice:prefix:name for systemd.
func CgroupsPath(driver, parent, id string) (string, error) {
	p, err := CgroupParent(driver, parent)
	if err != nil {
		return "", err
	}
	if driver == "systemd" {
		return p + ":husk:" + id, nil
	}
	return path.Join(p, id), nil
}

// CgroupParentOf is the parent a cgroupsPath of id was made under by
// CgroupsPath, in either driver's syntax.
func CgroupParentOf(cgroupsPath, id string) string {
	if p, ok := strings.CutSuffix(cgroupsPath, ":husk:"+id); ok {
		return p
	}
	return path.Dir(cgroupsPath)
}
