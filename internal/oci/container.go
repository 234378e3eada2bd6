package oci

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// More annotations of the io.kubernetes.cri family, on app containers.
const (
	AnnotationContainerName = "io.kubernetes.cri.container-name"
	AnnotationImageName     = "io.kubernetes.cri.image-name"
)

// DefaultCapabilities is the capability set of an unprivileged container,
// the same as containerd's and CRI-O's defaults.
var DefaultCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// User is a resolved process identity.
type User struct {
	UID, GID       uint32
	AdditionalGids []uint32
	Home           string
}

// ContainerSpec is what an app container needs beyond its CRI config.
type ContainerSpec struct {
	ID        string
	SandboxID string
	Handler   string
	Sandbox   *runtimeapi.PodSandboxConfig
	// RootfsPath is the container's mounted root filesystem.
	RootfsPath string
	// Image is the image's config (entrypoint, cmd, env, working dir);
	// ImageName the name the container was created from.
	Image     *v1.Config
	ImageName string
	User      User
	// InfraPID is the sandbox's infra process, whose namespaces the
	// container joins; NetnsPath the pinned network namespace (empty for
	// host network).
	InfraPID  int
	NetnsPath string
	// ShmPath is the pod's /dev/shm; empty for host IPC.
	ShmPath string
	// ResolvConf, Hostname and Hosts are the sandbox's files, bind
	// mounted over the image's (empty: keep the image's).
	ResolvConf, Hostname, Hosts string
	CgroupsPath                 string
	// Devices are the CRI devices resolved against the host.
	Devices []specs.LinuxDevice
	// RuntimeRRO says the runtime applies "rro" itself.
	RuntimeRRO bool
	// MountSources replaces the host path of CRI mounts by index: an
	// idmapped view of it, for a pod with a user namespace.
	MountSources map[int]string
	// TargetPID is the process of the container whose PID namespace a
	// pid=TARGET container joins.
	TargetPID int
	// AllCapabilities is what privileged and "ALL" grant: the node's
	// runtime's own bounding set.
	AllCapabilities []string
}

// ContainerProcessArgs resolves a container's command line as the kubelet
// documents it: command replaces the entrypoint, args replace the cmd, and
// a command without args drops the image's cmd.
func ContainerProcessArgs(cfg *runtimeapi.ContainerConfig, img *v1.Config) ([]string, error) {
	var entrypoint, cmd []string
	if img != nil {
		entrypoint, cmd = img.Entrypoint, img.Cmd
	}
	if len(cfg.GetCommand()) > 0 {
		entrypoint, cmd = cfg.GetCommand(), nil
	}
	if len(cfg.GetArgs()) > 0 {
		cmd = cfg.GetArgs()
	}
	args := append(append([]string{}, entrypoint...), cmd...)
	if len(args) == 0 {
		return nil, fmt.Errorf("no command specified: neither the container config nor the image has one")
	}
	return args, nil
}

// ContainerEnv merges the image's environment with the config's: config
// values win, the image's order is kept, PATH gets a default.
func ContainerEnv(cfg *runtimeapi.ContainerConfig, img *v1.Config, home string) []string {
	var keys []string
	vals := map[string]string{}
	set := func(kv string) {
		k, v, _ := strings.Cut(kv, "=")
		if _, ok := vals[k]; !ok {
			keys = append(keys, k)
		}
		vals[k] = v
	}
	set("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	if img != nil {
		for _, kv := range img.Env {
			set(kv)
		}
	}
	for _, e := range cfg.GetEnvs() {
		set(e.GetKey() + "=" + string(e.GetValue()))
	}
	if _, ok := vals["HOME"]; !ok && home != "" {
		set("HOME=" + home)
	}
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k + "=" + vals[k]
	}
	return out
}

// AppSpec builds the OCI spec of an app container joining its sandbox's
// namespaces.
func AppSpec(cfg *runtimeapi.ContainerConfig, s ContainerSpec) (*specs.Spec, error) {
	args, err := ContainerProcessArgs(cfg, s.Image)
	if err != nil {
		return nil, err
	}
	lx := cfg.GetLinux()
	sc := lx.GetSecurityContext()
	privileged := sc.GetPrivileged()
	cwd := cfg.GetWorkingDir()
	if cwd == "" && s.Image != nil {
		cwd = s.Image.WorkingDir
	}
	if cwd == "" {
		cwd = "/"
	}

	proc := &specs.Process{
		Terminal: cfg.GetTty(),
		Args:     args,
		Env:      ContainerEnv(cfg, s.Image, s.User.Home),
		Cwd:      cwd,
		User: specs.User{
			UID: s.User.UID, GID: s.User.GID, AdditionalGids: s.User.AdditionalGids,
		},
		NoNewPrivileges: sc.GetNoNewPrivs(),
		Capabilities:    capabilities(sc, s.AllCapabilities),
	}
	if adj := lx.GetResources().GetOomScoreAdj(); adj != 0 {
		v := int(adj)
		proc.OOMScoreAdj = &v
	}

	spec := &specs.Spec{
		Version:     SpecVersion,
		Process:     proc,
		Root:        &specs.Root{Path: s.RootfsPath, Readonly: sc.GetReadonlyRootfs()},
		Mounts:      appMounts(cfg, s, privileged),
		Annotations: appAnnotations(cfg, s),
		Linux: &specs.Linux{
			Namespaces:  appNamespaces(cfg, s),
			CgroupsPath: s.CgroupsPath,
			Resources:   resources(lx.GetResources(), s.Devices, deviceAccesses(cfg.GetDevices()), privileged),
			Devices:     s.Devices,
			Sysctl:      s.Sandbox.GetLinux().GetSysctls(),
		},
	}
	// Propagation out of (or into) the container needs its root's
	// propagation to allow it, as runc applies it to every mount below.
	for _, m := range cfg.GetMounts() {
		switch m.GetPropagation() {
		case runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL:
			spec.Linux.RootfsPropagation = "rshared"
		case runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER:
			if spec.Linux.RootfsPropagation == "" {
				spec.Linux.RootfsPropagation = "rslave"
			}
		}
	}
	if uids, gids, ok := PodIDMappings(s.Sandbox); ok {
		spec.Linux.UIDMappings, spec.Linux.GIDMappings = uids, gids
	}
	if privileged {
		spec.Linux.MaskedPaths, spec.Linux.ReadonlyPaths = nil, nil
	} else {
		spec.Linux.MaskedPaths, spec.Linux.ReadonlyPaths = DefaultMaskedPaths(), DefaultReadonlyPaths()
		if mp := sc.GetMaskedPaths(); mp != nil {
			spec.Linux.MaskedPaths = mp
		}
		if rp := sc.GetReadonlyPaths(); rp != nil {
			spec.Linux.ReadonlyPaths = rp
		}
	}
	return spec, nil
}

// capabilities computes the sets; all is what "all capabilities" means on
// this node: the runtime cannot grant more than it holds itself (containerd
// grants privileged containers its own current set for the same reason).
func capabilities(sc *runtimeapi.LinuxContainerSecurityContext, all []string) *specs.LinuxCapabilities {
	set := map[string]bool{}
	if sc.GetPrivileged() {
		for _, c := range all {
			set[c] = true
		}
	} else {
		for _, c := range DefaultCapabilities {
			set[c] = true
		}
	}
	norm := func(c string) string {
		c = strings.ToUpper(c)
		if !strings.HasPrefix(c, "CAP_") {
			c = "CAP_" + c
		}
		return c
	}
	for _, c := range sc.GetCapabilities().GetAddCapabilities() {
		if strings.EqualFold(c, "ALL") {
			for _, a := range all {
				set[a] = true
			}
			continue
		}
		set[norm(c)] = true
	}
	for _, c := range sc.GetCapabilities().GetDropCapabilities() {
		if strings.EqualFold(c, "ALL") {
			set = map[string]bool{}
			continue
		}
		delete(set, norm(c))
	}
	// Adds win over a drop of ALL, as in containerd.
	if dropsAll(sc) {
		for _, c := range sc.GetCapabilities().GetAddCapabilities() {
			if !strings.EqualFold(c, "ALL") {
				set[norm(c)] = true
			}
		}
	}
	list := make([]string, 0, len(set))
	for c := range set {
		list = append(list, c)
	}
	sort.Strings(list)
	caps := &specs.LinuxCapabilities{Bounding: list, Effective: list, Permitted: list}
	for _, c := range sc.GetCapabilities().GetAddAmbientCapabilities() {
		caps.Ambient = append(caps.Ambient, norm(c))
		caps.Inheritable = append(caps.Inheritable, norm(c))
	}
	return caps
}

func dropsAll(sc *runtimeapi.LinuxContainerSecurityContext) bool {
	for _, c := range sc.GetCapabilities().GetDropCapabilities() {
		if strings.EqualFold(c, "ALL") {
			return true
		}
	}
	return false
}

// CapabilitiesFromMask names the capabilities set in a capability mask
// (as /proc/self/status shows CapBnd).
func CapabilitiesFromMask(mask uint64) []string {
	var out []string
	for i, name := range capNames {
		if mask&(1<<uint(i)) != 0 {
			out = append(out, "CAP_"+name)
		}
	}
	return out
}

var capNames = []string{
	"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
	"SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
	"IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
	"SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
	"LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
	"WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
}

// appNamespaces joins the infra's namespaces: network (the pinned netns),
// IPC and UTS always; for PID the container's own option (the kubelet sets
// it; the sandbox's when it does not): POD joins the infra's, TARGET another
// container's (kubectl debug --target), CONTAINER a new one, NODE the
// host's.
func appNamespaces(cfg *runtimeapi.ContainerConfig, s ContainerSpec) []specs.LinuxNamespace {
	nsOpts := s.Sandbox.GetLinux().GetSecurityContext().GetNamespaceOptions()
	pidMode := nsOpts.GetPid()
	if own := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions(); own != nil {
		pidMode = own.GetPid()
	}
	infra := func(kind string) string { return fmt.Sprintf("/proc/%d/ns/%s", s.InfraPID, kind) }
	ns := []specs.LinuxNamespace{{Type: specs.MountNamespace}}
	if nsOpts.GetNetwork() != runtimeapi.NamespaceMode_NODE {
		ns = append(ns,
			specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: s.NetnsPath},
			specs.LinuxNamespace{Type: specs.UTSNamespace, Path: infra("uts")})
	}
	if nsOpts.GetIpc() != runtimeapi.NamespaceMode_NODE {
		ns = append(ns, specs.LinuxNamespace{Type: specs.IPCNamespace, Path: infra("ipc")})
	}
	if _, _, ok := PodIDMappings(s.Sandbox); ok {
		// The pod's user namespace, which the infra created; the runtime
		// wants the mappings even when it joins one.
		ns = append(ns, specs.LinuxNamespace{Type: specs.UserNamespace, Path: infra("user")})
	}
	switch pidMode {
	case runtimeapi.NamespaceMode_POD:
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace, Path: infra("pid")})
	case runtimeapi.NamespaceMode_TARGET:
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace, Path: fmt.Sprintf("/proc/%d/ns/pid", s.TargetPID)})
	case runtimeapi.NamespaceMode_NODE:
	default:
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace})
	}
	return ns
}

// appMounts: the usual kernel filesystems, the pod's files and /dev/shm,
// then the CRI mounts, which replace any default at the same destination.
func appMounts(cfg *runtimeapi.ContainerConfig, s ContainerSpec, privileged bool) []specs.Mount {
	sysOpts := []string{"nosuid", "noexec", "nodev", "ro"}
	if privileged {
		sysOpts = []string{"nosuid", "noexec", "nodev", "rw"}
	}
	mounts := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: sysOpts},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: append([]string{"relatime"}, sysOpts...)},
	}
	ro := func(readonly bool) string {
		if readonly {
			return "ro"
		}
		return "rw"
	}
	podFile := func(dst, src string) {
		if src != "" {
			mounts = append(mounts, specs.Mount{Destination: dst, Type: "bind", Source: src,
				Options: []string{"rbind", "rprivate", ro(cfg.GetLinux().GetSecurityContext().GetReadonlyRootfs())}})
		}
	}
	podFile("/etc/resolv.conf", s.ResolvConf)
	podFile("/etc/hostname", s.Hostname)
	podFile("/etc/hosts", s.Hosts)
	if s.ShmPath != "" {
		mounts = append(mounts, specs.Mount{Destination: "/dev/shm", Type: "bind", Source: s.ShmPath,
			Options: []string{"rbind", "rprivate", "rw", "nosuid", "nodev", "noexec"}})
	} else {
		mounts = append(mounts, specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm",
			Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}})
	}
	for i, m := range cfg.GetMounts() {
		dst := filepath.Clean(m.GetContainerPath())
		kept := mounts[:0]
		for _, d := range mounts {
			if d.Destination != dst {
				kept = append(kept, d)
			}
		}
		mounts = kept
		opts := []string{"rbind", ro(m.GetReadonly())}
		if m.GetRecursiveReadOnly() && s.RuntimeRRO {
			opts = append(opts, "rro") // else the source is a read-only view already
		}
		switch m.GetPropagation() {
		case runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER:
			opts = append(opts, "rslave")
		case runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL:
			opts = append(opts, "rshared")
		default:
			opts = append(opts, "rprivate")
		}
		src := m.GetHostPath()
		if alt, ok := s.MountSources[i]; ok {
			src = alt
		}
		mounts = append(mounts, specs.Mount{Destination: dst, Type: "bind", Source: src, Options: opts})
	}
	return mounts
}

func appAnnotations(cfg *runtimeapi.ContainerConfig, s ContainerSpec) map[string]string {
	a := map[string]string{}
	for k, v := range cfg.GetAnnotations() {
		a[k] = v
	}
	md := s.Sandbox.GetMetadata()
	a[AnnotationContainerType] = ContainerTypeContainer
	a[AnnotationSandboxID] = s.SandboxID
	a[AnnotationSandboxName] = md.GetName()
	a[AnnotationSandboxNamespace] = md.GetNamespace()
	a[AnnotationSandboxUID] = md.GetUid()
	a[AnnotationContainerName] = cfg.GetMetadata().GetName()
	a[AnnotationImageName] = s.ImageName
	a[AnnotationRuntimeHandler] = s.Handler
	return a
}

// DeviceAccess is the device cgroup access CRI permissions grant: a
// combination of r (read), w (write) and m (mknod), each at most once;
// all three when unset. ok is false for anything else.
func DeviceAccess(permissions string) (access string, ok bool) {
	if permissions == "" {
		return "rwm", true
	}
	for i, c := range permissions {
		if !strings.ContainsRune("rwm", c) || strings.ContainsRune(permissions[i+1:], c) {
			return "", false
		}
	}
	return permissions, true
}

// deviceAccesses is the cgroup access of each CRI device, by container
// path (the node's devices of a privileged container get "rwm").
func deviceAccesses(devs []*runtimeapi.Device) map[string]string {
	out := map[string]string{}
	for _, d := range devs {
		if a, ok := DeviceAccess(d.GetPermissions()); ok {
			out[filepath.Clean(d.GetContainerPath())] = a
		}
	}
	return out
}

// resources maps the CRI's LinuxContainerResources; zero values mean
// "not set" in the CRI and are left out. Each device is allowed the access
// in access (by container path), else "rwm".
func resources(r *runtimeapi.LinuxContainerResources, devices []specs.LinuxDevice, access map[string]string, privileged bool) *specs.LinuxResources {
	out := &specs.LinuxResources{}
	if privileged {
		out.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
	} else {
		out.Devices = []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}
		for _, d := range devices {
			major, minor := d.Major, d.Minor
			a, ok := access[filepath.Clean(d.Path)]
			if !ok {
				a = "rwm"
			}
			out.Devices = append(out.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: d.Type, Major: &major, Minor: &minor, Access: a})
		}
	}
	UpdateResources(out, r)
	return out
}

// UpdateResources sets the CRI resources on an OCI resources block (also
// used for UpdateContainerResources).
func UpdateResources(out *specs.LinuxResources, r *runtimeapi.LinuxContainerResources) {
	if r == nil {
		return
	}
	cpu := &specs.LinuxCPU{}
	if v := r.GetCpuShares(); v != 0 {
		u := uint64(v)
		cpu.Shares = &u
	}
	if v := r.GetCpuQuota(); v != 0 {
		cpu.Quota = &v
	}
	if v := r.GetCpuPeriod(); v != 0 {
		u := uint64(v)
		cpu.Period = &u
	}
	cpu.Cpus, cpu.Mems = r.GetCpusetCpus(), r.GetCpusetMems()
	if cpu.Shares != nil || cpu.Quota != nil || cpu.Period != nil || cpu.Cpus != "" || cpu.Mems != "" {
		out.CPU = cpu
	}
	if v := r.GetMemoryLimitInBytes(); v != 0 {
		out.Memory = &specs.LinuxMemory{Limit: &v}
		if sw := r.GetMemorySwapLimitInBytes(); sw != 0 {
			out.Memory.Swap = &sw
		}
	}
	for _, h := range r.GetHugepageLimits() {
		out.HugepageLimits = append(out.HugepageLimits, specs.LinuxHugepageLimit{Pagesize: h.GetPageSize(), Limit: h.GetLimit()})
	}
	if u := r.GetUnified(); len(u) > 0 {
		out.Unified = map[string]string{}
		for k, v := range u {
			out.Unified[k] = v
		}
	}
}
