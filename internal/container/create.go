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
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/ids"
	"github.com/huskrt/husk/internal/image"
	"github.com/huskrt/husk/internal/lifecycle"
	"github.com/huskrt/husk/internal/monitor"
	mproto "github.com/huskrt/husk/internal/monitor/proto"
	"github.com/huskrt/husk/internal/oci"
	"github.com/huskrt/husk/internal/ociruntime"
	"github.com/huskrt/husk/internal/phase"
	"github.com/huskrt/husk/internal/proc"
)

// Name is the reserved name of a container, as containerd spells it:
// container_pod_namespace_uid_attempt.
func Name(cfg *runtimeapi.ContainerConfig, sb *runtimeapi.PodSandboxConfig) string {
	md, smd := cfg.GetMetadata(), sb.GetMetadata()
	return strings.Join([]string{md.GetName(), smd.GetName(), smd.GetNamespace(), smd.GetUid(),
		strconv.FormatUint(uint64(md.GetAttempt()), 10)}, "_")
}

// Create creates a container in a ready sandbox and returns its ID: the
// steps of CreateContainer, in order. Once the record is persisted (3), a
// failure undoes every step done so far (undoCreateLocked) and the error
// names the container.
func (m *Manager) Create(ctx context.Context, sandboxID string, cfg *runtimeapi.ContainerConfig) (_ string, err error) {
	// 1. The config: names, paths, mounts, env keys.
	if err := ValidateConfig(cfg); err != nil {
		return "", err
	}
	// 2. The sandbox (READY), the image, the images of the image volumes,
	// the names of the CDI devices and the runtime handler, and from them
	// the record.
	req, err := m.resolve(sandboxID, cfg)
	if err != nil {
		return "", err
	}
	c, err := m.newContainer(req)
	if err != nil {
		return "", err
	}
	// 3. The name, reserved in memory and persisted with the record
	// (CREATING) before anything the container owns exists, so a crash
	// at any later point leaves something recovery can undo.
	timer := phase.Start(m.opts.Phases)
	if err := m.reserve(c); err != nil {
		return "", err
	}
	defer c.mu.Unlock()
	timer.Mark("persist")
	defer func() {
		if err != nil {
			err = m.undoCreateLocked(c, err)
		}
	}()
	rec := &c.rec
	in := m.specInput(req, rec)

	// 4. The rootfs: the image's layers, held in the image store until
	// the container is removed (even once the image is), under the
	// container's own writable layer.
	if err := m.opts.Images.HoldLayers(rec.ID, rec.Layers); err != nil {
		return "", err
	}
	in.RootfsPath, err = m.mountRootfs(rec, m.opts.Images.LayerDirs(req.image), req.userns)
	if err != nil {
		return "", err
	}
	timer.Mark("rootfs")
	// 5. The image volumes: each image's layers, held like the rootfs's
	// and mounted read-only (idmapped in a user-namespaced pod), or the
	// directory image_sub_path names in them.
	imageSources, err := m.mountImages(rec, cfg.GetMounts(), req.volumeImages, req.userns)
	if err != nil {
		return "", err
	}
	timer.Mark("image_volumes")
	// 6. The user, resolved against the image's passwd and group.
	in.User, err = resolveUser(in.RootfsPath, cfg.GetLinux().GetSecurityContext(), req.imageConfig.User)
	if err != nil {
		return "", err
	}
	rec.UID, rec.GID, rec.Groups = in.User.UID, in.User.GID, in.User.AdditionalGids
	// 7. Devices, the PID namespace a pid=TARGET container joins, and
	// the host side of the mounts.
	in.Devices, err = containerDevices(cfg)
	if err != nil {
		return "", err
	}
	in.TargetPID, err = m.targetPID(cfg, req.sandbox.ID)
	if err != nil {
		return "", err
	}
	if err := prepareMounts(cfg.GetMounts()); err != nil {
		return "", err
	}
	// 8. Volume views (idmapped, recursively read-only), staged until
	// the runtime has made its own clones of them (11), and the image
	// volumes' mounts.
	var dropViews func()
	in.MountSources, dropViews, err = volumeViews(m.rootDir(rec.ID), cfg.GetMounts(), req.userns, req.sandbox.Config, req.runtime.RecursiveReadOnly)
	if err != nil {
		return "", err
	}
	defer dropViews()
	in.MountSources = withSources(in.MountSources, imageSources)
	// 9. The OCI spec, with its seccomp filter and AppArmor profile, and
	// the edits of the CDI devices and their specs.
	spec, err := buildSpec(cfg, in, m.appArmor)
	if err != nil {
		return "", err
	}
	if err := m.cdi.inject(spec, req.cdiDevices); err != nil {
		return "", err
	}
	// 10. The bundle, and the directory of the CRI log.
	bundle, err := m.writeBundle(rec, spec)
	if err != nil {
		return "", err
	}
	timer.Mark("spec")
	// 11. The pod's monitor (the pod's first container starts it), which
	// runs the runtime's create and stays the container's parent.
	mon, err := m.monitorFor(ctx, req.sandbox.ID)
	if err != nil {
		return "", err
	}
	timer.Mark("monitor")
	if err := m.runtimeCreate(ctx, c, mon, req.runtime, bundle); err != nil {
		return "", err
	}
	timer.Mark("runtime")
	// 12. CREATED, persisted; its exit is followed from now on.
	if err := m.markCreated(c, mon); err != nil {
		return "", err
	}
	timer.Mark("persisted")
	log := m.logger(rec)
	log.Info("container created", "name", rec.Name, "image", rec.ImageID, "pid", rec.PID)
	log.Debug("container create phases", timer.Attrs()...)
	m.emit(rec, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT)
	return rec.ID, nil
}

// createRequest is what CreateContainer resolved before it reserves
// anything.
type createRequest struct {
	cfg         *runtimeapi.ContainerConfig
	sandbox     SandboxInfo
	image       *image.Image
	imageConfig *v1.Config
	runtime     *ociruntime.Runtime
	// userns is the pod's user namespace; nil when the pod has none.
	userns *idmap
	// volumeImages are the images of the image volumes, by mount index.
	volumeImages map[int]*image.Image
	// cdiDevices are the qualified names of the CDI devices asked for.
	cdiDevices []string
}

// resolve finds the ready sandbox, the images and the runtime handler a
// container is created from, and the CDI devices it asks for.
func (m *Manager) resolve(sandboxID string, cfg *runtimeapi.ContainerConfig) (*createRequest, error) {
	sb, err := m.opts.Sandboxes.Sandbox(sandboxID)
	if err != nil {
		return nil, err
	}
	if !sb.Ready {
		return nil, fmt.Errorf("pod sandbox %s is not ready: %w", sb.ID, errdefs.ErrFailedPrecondition)
	}
	img, err := m.opts.Images.Resolve(cfg.GetImage().GetImage())
	if err != nil {
		return nil, fmt.Errorf("container image %q: %w", cfg.GetImage().GetImage(), err)
	}
	imgCfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	vols, err := m.volumeImages(cfg.GetMounts())
	if err != nil {
		return nil, err
	}
	cdiNames, err := cdiDeviceNames(cfg)
	if err != nil {
		return nil, err
	}
	rt, err := m.opts.Runtimes.Get(sb.Handler)
	if err != nil {
		return nil, err
	}
	return &createRequest{cfg: cfg, sandbox: sb, image: img, imageConfig: &imgCfg.Config, runtime: rt,
		userns: podUserns(sb), volumeImages: vols, cdiDevices: cdiNames}, nil
}

// newContainer makes the container's record (state CREATING) with a new ID.
func (m *Manager) newContainer(req *createRequest) (*Container, error) {
	cfg, sb := req.cfg, req.sandbox
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("encode container config: %w", err)
	}
	res, _ := json.Marshal(cfg.GetLinux().GetResources())
	id := ids.New()
	cgroups, err := oci.CgroupsPath(m.opts.CgroupDriver, sb.CgroupParent, id)
	if err != nil {
		return nil, fmt.Errorf("container cgroup: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	c := &Container{config: cfg, exited: make(chan struct{})}
	c.rec = Record{
		ID: id, Name: Name(cfg, sb.Config), SandboxID: sb.ID, Config: raw,
		ImageID: req.image.ID, ImageName: imageName(cfg.GetImage().GetImage(), req.image.RepoTags), Layers: req.image.Layers,
		Handler: sb.Handler, State: StateCreating, CreatedAt: time.Now().UnixNano(), BootID: m.bootID,
		Resources: res, StopSignal: stopSignalName(cfg, req.imageConfig.StopSignal), CgroupsPath: cgroups,
		LogPath: logPath(sb.Config.GetLogDirectory(), cfg.GetLogPath()),
	}
	return c, nil
}

// imageName is the image name ContainerStatus reports: the asked-for one
// when it is an ID, else the image's tag that ends with it, else its
// first tag.
func imageName(asked string, repoTags []string) string {
	if len(repoTags) == 0 || strings.HasPrefix(asked, "sha256:") {
		return asked
	}
	name := repoTags[0]
	for _, t := range repoTags {
		if strings.HasSuffix(t, asked) {
			name = t
		}
	}
	return name
}

// logPath is where the container's CRI log goes: its log_path (checked
// by ValidateConfig to stay inside) under the pod's log directory; ""
// when either is unset.
func logPath(podLogDir, containerLogPath string) string {
	if containerLogPath == "" || podLogDir == "" {
		return ""
	}
	return filepath.Join(podLogDir, filepath.Clean(containerLogPath))
}

// reserve takes the container's name in memory, then persists the record
// and the name in one transaction. On success it returns with c.mu held.
func (m *Manager) reserve(c *Container) error {
	c.mu.Lock()
	rec := &c.rec
	if holder, ok := m.index.Reserve(rec.ID, rec.Name, c); !ok {
		c.mu.Unlock()
		return fmt.Errorf("container name %q is reserved by container %s: %w", rec.Name, holder.rec.ID, errdefs.ErrAlreadyExists)
	}
	if err := m.records.Create(rec.ID, rec.Name, rec, &c.snapshot); err != nil {
		m.unindex(c)
		c.mu.Unlock()
		return err
	}
	return nil
}

// undoCreateLocked is CreateContainer's one rollback, for a failure after
// the record was persisted: it releases what the steps made on the host
// (releaseLocked, driven by the record as after a crash), then deletes the
// record and the name and releases the image's layers (deleteLocked). What
// cannot be released keeps the record for RemoveContainer to retry. It returns err naming the container, joined
// with what the undo could not do.
func (m *Manager) undoCreateLocked(c *Container, err error) error {
	rec := &c.rec
	err = fmt.Errorf("container %s: %w", rec.ID, err)
	if uerr := m.releaseLocked(c); uerr != nil {
		m.logger(rec).Error("undo of failed CreateContainer incomplete", "error", uerr)
		return errors.Join(err, fmt.Errorf("undo: %w", uerr))
	}
	if derr := m.deleteLocked(c); derr != nil {
		return errors.Join(err, derr)
	}
	return err
}

// runtimeCreate has the pod's monitor run the runtime's create, so that
// the monitor is the parent of the container's init and copies its output
// into the CRI log (without a log path, output.log in the bundle). The
// runtime is never killed half-way: it runs on a context of its own.
func (m *Manager) runtimeCreate(ctx context.Context, c *Container, mon *monitor.Client, rt *ociruntime.Runtime, bundle string) error {
	rec := &c.rec
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
		Stdin: c.config.GetStdin(), StdinOnce: c.config.GetStdinOnce(), Tty: c.config.GetTty(),
	})
	if err != nil {
		return fmt.Errorf("create with handler %s: %w", rec.Handler, err)
	}
	rec.PID = pid
	// The init waits at the runtime's exec fifo, a child of the monitor:
	// its PID names it until the monitor reaps it.
	if start, err := proc.StartTime(pid); err == nil {
		rec.PIDStart = start
	}
	return nil
}

// markCreated persists the container as CREATED and follows its exit.
func (m *Manager) markCreated(c *Container, mon *monitor.Client) error {
	c.rec.State = StateCreated
	if err := m.persistLocked(c); err != nil {
		c.rec.State = StateCreating
		return err
	}
	go m.waitExit(c, mon.Dir())
	return nil
}

// releaseLocked undoes what a container owns on the host: the runtime's
// container (killed), the monitor's entry, every mount below its dir (the
// rootfs, the image volumes, views left staged), and the dirs. It is
// idempotent, and right whatever the record says was done: after a crash
// a CREATING record does not say what its Create had done. c.mu must be
// held.
func (m *Manager) releaseLocked(c *Container) error {
	rec := &c.rec
	ctx, cancel := lifecycle.FreshContext()
	defer cancel()
	var errs []error
	if rec.RuntimeCreated {
		if err := m.deleteRuntime(ctx, rec); err != nil {
			errs = append(errs, fmt.Errorf("delete runtime container: %w", err))
		} else {
			rec.RuntimeCreated = false
		}
	}
	mon := m.monitorClient(rec.SandboxID)
	if err := mon.Forget(ctx, rec.ID); err != nil && !goneOrUnknown(err) {
		errs = append(errs, fmt.Errorf("monitor: %w", err))
	}
	if err := unmountBelow(m.rootDir(rec.ID)); err != nil {
		errs = append(errs, err)
	} else {
		rec.RootfsMounted = false
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
