package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/ids"
	mproto "github.com/huskrt/husk/internal/monitor/proto"
	"github.com/huskrt/husk/internal/oci"
	"github.com/huskrt/husk/internal/phase"
	"github.com/huskrt/husk/internal/store"
)

// Name is the reserved name of a container, as containerd spells it:
// container_pod_namespace_uid_attempt.
func Name(cfg *runtimeapi.ContainerConfig, sb *runtimeapi.PodSandboxConfig) string {
	md, smd := cfg.GetMetadata(), sb.GetMetadata()
	return strings.Join([]string{md.GetName(), smd.GetName(), smd.GetNamespace(), smd.GetUid(),
		strconv.FormatUint(uint64(md.GetAttempt()), 10)}, "_")
}

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
		if !filepath.IsAbs(m.GetHostPath()) {
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
	for i, e := range cfg.GetEnvs() {
		if e.GetKey() == "" || strings.ContainsAny(e.GetKey(), "=\x00") {
			return bad(fmt.Sprintf("envs[%d].key", i), fmt.Sprintf("%q is not a valid variable name", e.GetKey()))
		}
	}
	return nil
}

// Create creates a container in a ready sandbox and returns its ID. Every
// step is undone when a later one fails.
func (m *Manager) Create(ctx context.Context, sandboxID string, cfg *runtimeapi.ContainerConfig) (_ string, err error) {
	if err := ValidateConfig(cfg); err != nil {
		return "", err
	}
	sb, err := m.opts.Sandbox(sandboxID)
	if err != nil {
		return "", err
	}
	if !sb.Ready {
		return "", fmt.Errorf("pod sandbox %s is not ready: %w", sb.ID, errdefs.ErrFailedPrecondition)
	}
	img, err := m.opts.Images.Resolve(cfg.GetImage().GetImage())
	if err != nil {
		return "", fmt.Errorf("container image %q: %w", cfg.GetImage().GetImage(), err)
	}
	imgCfg, err := img.ConfigFile()
	if err != nil {
		return "", err
	}
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(cfg)
	if err != nil {
		return "", fmt.Errorf("encode container config: %w", err)
	}
	res, _ := json.Marshal(cfg.GetLinux().GetResources())
	c := &Container{config: cfg, exited: make(chan struct{})}
	c.rec = Record{
		ID: ids.New(), Name: Name(cfg, sb.Config), SandboxID: sb.ID, Config: raw,
		ImageID: img.ID, ImageName: cfg.GetImage().GetImage(), Layers: img.Layers,
		Handler: sb.Handler, State: StateCreating, CreatedAt: time.Now().UnixNano(),
		Resources: res, StopSignal: imgCfg.Config.StopSignal,
	}
	if len(img.RepoTags) > 0 && !strings.HasPrefix(c.rec.ImageName, "sha256:") {
		c.rec.ImageName = img.RepoTags[0]
		for _, t := range img.RepoTags {
			if strings.HasSuffix(t, cfg.GetImage().GetImage()) {
				c.rec.ImageName = t
			}
		}
	}
	if lp := cfg.GetLogPath(); lp != "" && sb.Config.GetLogDirectory() != "" {
		c.rec.LogPath = filepath.Join(sb.Config.GetLogDirectory(), filepath.Clean(lp))
	}
	rt, err := m.runtimeFor(sb.Handler)
	if err != nil {
		return "", err
	}
	c.rec.CgroupsPath, err = oci.CgroupsPath(m.opts.CgroupDriver, sb.CgroupParent, c.rec.ID)
	if err != nil {
		return "", fmt.Errorf("container cgroup: %v: %w", err, errdefs.ErrInvalidArgument)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	m.mu.Lock()
	if holder, ok := m.byName[c.rec.Name]; ok {
		m.mu.Unlock()
		return "", fmt.Errorf("container name %q is reserved by container %s: %w", c.rec.Name, holder.rec.ID, errdefs.ErrAlreadyExists)
	}
	m.byID[c.rec.ID] = c
	m.byName[c.rec.Name] = c
	m.mu.Unlock()

	rec := &c.rec
	log := m.logger(rec)
	timer := phase.Start()
	if err := m.opts.Store.Create(store.Containers, store.ContainerName, rec.ID, rec.Name, rec); err != nil {
		m.unindex(c)
		return "", fmt.Errorf("container %s: reserve name %q: %w", rec.ID, rec.Name, err)
	}
	c.setView()
	timer.Mark("persist")
	defer func() {
		if err == nil {
			return
		}
		err = fmt.Errorf("container %s: %w", rec.ID, err)
		if uerr := m.releaseLocked(c); uerr != nil {
			log.Error("undo of failed CreateContainer incomplete", "error", uerr)
			err = errors.Join(err, fmt.Errorf("undo: %w", uerr))
			return
		}
		if derr := m.opts.Store.Delete(store.Containers, store.ContainerName, rec.ID, rec.Name); derr != nil {
			err = errors.Join(err, derr)
			return
		}
		m.unindex(c)
	}()

	// The rootfs: the image's layers under a private writable layer; in a
	// pod with its own user namespace, the layers are seen through
	// idmapped mounts so the image's root is the pod's root.
	var userns *idmap
	if uids, gids, ok := oci.PodIDMappings(sb.Config); ok {
		userns = &idmap{nsPath: fmt.Sprintf("/proc/%d/ns/user", sb.InfraPID), rootUID: uids[0].HostID, rootGID: gids[0].HostID}
	}
	rootfs, err := m.mountRootfs(rec, m.opts.Images.LayerDirs(img), userns)
	if err != nil {
		return "", err
	}
	timer.Mark("rootfs")
	user, err := resolveUser(rootfs, cfg.GetLinux().GetSecurityContext(), imgCfg.Config.User)
	if err != nil {
		return "", err
	}
	rec.UID, rec.GID, rec.Groups = user.UID, user.GID, user.AdditionalGids
	devices, err := resolveDevices(cfg.GetDevices())
	if err != nil {
		return "", err
	}
	var targetPID int
	if ns := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions(); ns.GetPid() == runtimeapi.NamespaceMode_TARGET {
		if targetPID, err = m.targetPID(ns.GetTargetId(), sb.ID); err != nil {
			return "", err
		}
	}
	if cfg.GetLinux().GetSecurityContext().GetPrivileged() {
		// A privileged container sees the node's devices, as with
		// containerd and CRI-O.
		devices = append(hostDevices(), devices...)
	}
	for i, mnt := range cfg.GetMounts() {
		// Host paths that do not exist are made as directories, as
		// containerd does: the kubelet asks for them (emptyDir, hostPath
		// DirectoryOrCreate).
		if _, serr := os.Stat(mnt.GetHostPath()); errors.Is(serr, os.ErrNotExist) {
			if err := os.MkdirAll(mnt.GetHostPath(), 0o755); err != nil {
				return "", fmt.Errorf("mounts[%d]: host path %s: %w", i, mnt.GetHostPath(), err)
			}
		}
		if err := checkPropagation(mnt); err != nil {
			return "", fmt.Errorf("mounts[%d]: %w", i, err)
		}
	}
	// Volumes that need a view: idmapped for a pod with a user namespace
	// (the kubelet gives them the pod's mappings), recursively read-only
	// where the runtime cannot do it. The view is what gets bind mounted;
	// the runtime's bind mounts are clones, so the staged views go once it
	// created the container.
	mountSources, cleanupViews, err := volumeViews(m.rootDir(rec.ID), cfg.GetMounts(), userns, sb.Config, rt.RecursiveReadOnly)
	if err != nil {
		return "", err
	}
	defer cleanupViews()
	if rec.LogPath != "" {
		if err := os.MkdirAll(filepath.Dir(rec.LogPath), 0o755); err != nil {
			return "", fmt.Errorf("log directory: %w", err)
		}
	}
	spec, err := oci.AppSpec(cfg, oci.ContainerSpec{
		ID: rec.ID, SandboxID: sb.ID, Handler: sb.Handler, Sandbox: sb.Config,
		RootfsPath: rootfs, Image: &imgCfg.Config, ImageName: rec.ImageName, User: user,
		InfraPID: sb.InfraPID, NetnsPath: sb.NetnsPath, ShmPath: sb.ShmPath,
		ResolvConf: filepath.Join(sb.Dir, "resolv.conf"), Hostname: filepath.Join(sb.Dir, "hostname"),
		Hosts: filepath.Join(sb.Dir, "hosts"), CgroupsPath: rec.CgroupsPath, Devices: devices, AllCapabilities: m.allCaps, TargetPID: targetPID, MountSources: mountSources, RuntimeRRO: rt.RecursiveReadOnly,
	})
	if err != nil {
		return "", fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}
	if err := applySeccomp(spec, cfg.GetLinux().GetSecurityContext()); err != nil {
		return "", err
	}
	if err := applyAppArmor(spec, cfg.GetLinux().GetSecurityContext(), m.appArmor); err != nil {
		return "", err
	}
	bundle := m.bundleDir(rec.ID)
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		return "", fmt.Errorf("bundle: %w", err)
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return "", fmt.Errorf("spec: %w", err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		return "", fmt.Errorf("spec: %w", err)
	}
	timer.Mark("spec")
	mon, err := m.monitorFor(ctx, sb.ID)
	if err != nil {
		return "", err
	}
	timer.Mark("monitor")
	logPath := rec.LogPath
	if logPath == "" {
		logPath = filepath.Join(bundle, "output.log")
	}
	rec.RuntimeCreated = true
	opCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 4*time.Minute)
	defer cancel()
	pid, err := mon.Create(opCtx, &mproto.Create{
		ID: rec.ID, Runtime: rt.Path, RuntimeRoot: rt.Root, SystemdCgroup: rt.SystemdCgroup,
		Bundle: bundle, LogPath: logPath, ExitFile: m.exitFile(rec.ID),
		Stdin: cfg.GetStdin(), StdinOnce: cfg.GetStdinOnce(), Tty: cfg.GetTty(),
	})
	if err != nil {
		return "", fmt.Errorf("create with handler %s: %w", sb.Handler, err)
	}
	timer.Mark("runtime")
	rec.PID = pid
	rec.State = StateCreated
	if err := m.persistLocked(c); err != nil {
		rec.State = StateCreating
		return "", err
	}
	go m.waitExit(c, mon.Dir())
	timer.Mark("persisted")
	log.Info("container created", "name", rec.Name, "image", rec.ImageID, "pid", pid)
	log.Debug("container create phases", timer.Attrs()...)
	m.emit(rec, EventCreated)
	return rec.ID, nil
}

// mountRootfs mounts the overlay of the image layers (lowest last in
// lowerdir) and the container's own upper dir.
func (m *Manager) mountRootfs(rec *Record, layers []string, userns *idmap) (string, error) {
	dir := m.rootDir(rec.ID)
	upper, work, rootfs := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "rootfs")
	for _, d := range []string{upper, work, rootfs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", fmt.Errorf("rootfs: %w", err)
		}
	}
	if userns != nil {
		// What the container writes belongs to the pod's root.
		if err := os.Chown(upper, int(userns.rootUID), int(userns.rootGID)); err != nil {
			return "", fmt.Errorf("rootfs: %w", err)
		}
		views := make([]view, len(layers))
		for i, l := range layers {
			views[i] = view{src: l, userns: userns.nsPath}
		}
		staged, cleanup, err := stageViews(filepath.Join(dir, "idmap"), views)
		if err != nil {
			return "", fmt.Errorf("rootfs: idmapped layers: %w", err)
		}
		// overlayfs keeps its own clones of the layer mounts: the staged
		// ones go as soon as it is mounted.
		defer cleanup()
		layers = staged
	}
	lower := make([]string, 0, len(layers))
	for i := len(layers) - 1; i >= 0; i-- {
		lower = append(lower, layers[i])
	}
	if len(lower) == 0 {
		empty := filepath.Join(dir, "empty")
		if err := os.MkdirAll(empty, 0o755); err != nil {
			return "", fmt.Errorf("rootfs: %w", err)
		}
		lower = append(lower, empty)
	}
	if err := mountOverlay(rootfs, lower, upper, work); err != nil {
		return "", fmt.Errorf("mount rootfs overlay (%d layers): %w", len(layers), err)
	}
	rec.RootfsMounted = true
	return rootfs, nil
}

// mountOverlay mounts an overlay of lower (top-most first) at target.
// mount(2) takes the options as one page; an image with many layers (or
// long paths) passes that, and then the layers are given one by one
// through the new mount API ("lowerdir+", Linux 6.8+), which has no limit.
func mountOverlay(target string, lower []string, upper, work string) error {
	data := "lowerdir=" + strings.Join(lower, ":") + ",upperdir=" + upper + ",workdir=" + work
	if len(data) < os.Getpagesize()-1 {
		return unix.Mount("overlay", target, "overlay", 0, data)
	}
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen: %w", err)
	}
	defer unix.Close(fd)
	for _, l := range lower {
		if err := unix.FsconfigSetString(fd, "lowerdir+", l); err != nil {
			return fmt.Errorf("overlay options longer than a page need lowerdir+ (Linux 6.8+): %w: %w", err, errdefs.ErrNotImplemented)
		}
	}
	if err := unix.FsconfigSetString(fd, "upperdir", upper); err != nil {
		return fmt.Errorf("upperdir: %w", err)
	}
	if err := unix.FsconfigSetString(fd, "workdir", work); err != nil {
		return fmt.Errorf("workdir: %w", err)
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return fmt.Errorf("create overlay: %w", err)
	}
	mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fsmount: %w", err)
	}
	defer unix.Close(mfd)
	return unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH)
}

// idmap is a pod's user namespace as the rootfs needs it.
type idmap struct {
	nsPath           string
	rootUID, rootGID uint32
}

// releaseLocked undoes what a container owns on the host: the runtime's
// container (killed), the monitor's entry, the rootfs and the dirs. It is
// idempotent; c.mu must be held.
func (m *Manager) releaseLocked(c *Container) error {
	rec := &c.rec
	ctx, cancel := freshContext()
	defer cancel()
	var errs []error
	if rec.RuntimeCreated {
		rt, err := m.runtimeFor(rec.Handler)
		if err == nil {
			err = rt.Delete(ctx, rec.ID)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("delete runtime container: %w", err))
		} else {
			rec.RuntimeCreated = false
		}
	}
	if rec.State != StateCreating {
		mon := m.monitorClient(rec.SandboxID)
		if err := mon.Forget(ctx, rec.ID); err != nil && !errorsIsGoneOrUnknown(err) {
			errs = append(errs, fmt.Errorf("monitor: %w", err))
		}
	}
	if rec.RootfsMounted {
		rootfs := filepath.Join(m.rootDir(rec.ID), "rootfs")
		if err := unix.Unmount(rootfs, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount rootfs: %w", err))
		} else {
			rec.RootfsMounted = false
		}
	}
	if len(errs) == 0 {
		for _, d := range []string{m.rootDir(rec.ID), m.bundleDir(rec.ID)} {
			if err := os.RemoveAll(d); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func resolveDevices(devs []*runtimeapi.Device) ([]specs.LinuxDevice, error) {
	var out []specs.LinuxDevice
	for i, d := range devs {
		var st unix.Stat_t
		if err := unix.Stat(d.GetHostPath(), &st); err != nil {
			return nil, fmt.Errorf("devices[%d]: host path %s: %v: %w", i, d.GetHostPath(), err, errdefs.ErrInvalidArgument)
		}
		var kind string
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFCHR:
			kind = "c"
		case unix.S_IFBLK:
			kind = "b"
		default:
			return nil, fmt.Errorf("devices[%d]: %s is not a device: %w", i, d.GetHostPath(), errdefs.ErrInvalidArgument)
		}
		mode := os.FileMode(st.Mode & 0o777)
		uid, gid := st.Uid, st.Gid
		out = append(out, specs.LinuxDevice{
			Path: d.GetContainerPath(), Type: kind,
			Major: int64(unix.Major(uint64(st.Rdev))), Minor: int64(unix.Minor(uint64(st.Rdev))),
			FileMode: &mode, UID: &uid, GID: &gid,
		})
	}
	return out, nil
}

// targetPID is the process of a running container of the same sandbox,
// whose PID namespace a pid=TARGET container joins.
func (m *Manager) targetPID(id, sandboxID string) (int, error) {
	if id == "" {
		return 0, fmt.Errorf("namespace_options.target_id is empty with pid mode TARGET: %w", errdefs.ErrInvalidArgument)
	}
	t, err := m.get(id)
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

// checkPropagation refuses a propagation the host's mount of the source
// cannot give: bidirectional needs a shared mount, host-to-container a
// shared or slave one (otherwise nothing would ever propagate, silently).
func checkPropagation(m *runtimeapi.Mount) error {
	want := m.GetPropagation()
	if want != runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL && want != runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER {
		return nil
	}
	info, err := mountinfo.GetMounts(mountinfo.ParentsFilter(m.GetHostPath()))
	if err != nil || len(info) == 0 {
		return fmt.Errorf("host path %s: find its mount: %v", m.GetHostPath(), err)
	}
	mnt := info[0]
	for _, i := range info {
		if len(i.Mountpoint) > len(mnt.Mountpoint) {
			mnt = i
		}
	}
	shared := strings.Contains(mnt.Optional, "shared:")
	slave := strings.Contains(mnt.Optional, "master:")
	if want == runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL && !shared {
		return fmt.Errorf("host path %s is on mount %s, which is not shared (bidirectional propagation needs it): %w", m.GetHostPath(), mnt.Mountpoint, errdefs.ErrInvalidArgument)
	}
	if !shared && !slave {
		return fmt.Errorf("host path %s is on mount %s, which is neither shared nor slave (host-to-container propagation needs one): %w", m.GetHostPath(), mnt.Mountpoint, errdefs.ErrInvalidArgument)
	}
	return nil
}

// hostDevices lists the node's device nodes under /dev, leaving out the
// filesystems a container gets its own of.
func hostDevices() []specs.LinuxDevice {
	var out []specs.LinuxDevice
	_ = filepath.WalkDir("/dev", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() {
			switch p {
			case "/dev/pts", "/dev/shm", "/dev/mqueue", "/dev/.lxc", "/dev/.lxd-mounts":
				return filepath.SkipDir
			}
			return nil
		}
		if p == "/dev/console" || d.Type()&os.ModeDevice == 0 {
			return nil
		}
		if devs, err := resolveDevices([]*runtimeapi.Device{{HostPath: p, ContainerPath: p}}); err == nil {
			out = append(out, devs...)
		}
		return nil
	})
	return out
}
