package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	"github.com/huskrt/husk/internal/oci"
	"github.com/huskrt/husk/internal/ociruntime"
	"github.com/huskrt/husk/internal/phase"
)

// Name is the reserved name of a container, as containerd spells it:
// container_pod_namespace_uid_attempt.
func Name(cfg *runtimeapi.ContainerConfig, sb *runtimeapi.PodSandboxConfig) string {
	md, smd := cfg.GetMetadata(), sb.GetMetadata()
	return strings.Join([]string{md.GetName(), smd.GetName(), smd.GetNamespace(), smd.GetUid(),
		strconv.FormatUint(uint64(md.GetAttempt()), 10)}, "_")
}

// Create creates a container in a ready sandbox and returns its ID: the
// steps of CreateContainer, in order. Once the name is reserved (3), a
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
	// 3. The name, reserved in memory. The record is persisted once the
	// container is CREATED (11): what the steps between make is all below
	// the container's own dirs, which recovery releases when a crash cut
	// Create short.
	timer := phase.Start(m.opts.Phases)
	if err := m.reserve(c); err != nil {
		return "", err
	}
	defer c.mu.Unlock()
	timer.Mark("reserve")
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
	// the runtime has made its own clones of them (StartContainer), and
	// the image volumes' mounts.
	in.MountSources, err = volumeViews(m.rootDir(rec.ID), cfg.GetMounts(), req.userns, req.sandbox.Config, req.runtime.RecursiveReadOnly)
	if err != nil {
		return "", err
	}
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
	if err := m.writeBundle(rec, spec); err != nil {
		return "", err
	}
	timer.Mark("spec")
	// 11. CREATED, persisted. Nothing runs yet: StartContainer has the
	// pod's monitor create and start the container in one runtime call
	// (as containerd's CreateContainer too leaves the runtime to
	// StartContainer).
	if err := m.markCreated(c); err != nil {
		return "", err
	}
	timer.Mark("persisted")
	log := m.logger(rec)
	log.Info("container created", "name", rec.Name, "image", rec.ImageID)
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
		ImageID: req.image.ID, ImageName: imageName(cfg.GetImage().GetImage(), cfg.GetImage().GetUserSpecifiedImage(), req.image.RepoTags), Layers: req.image.Layers,
		Handler: sb.Handler, State: StateCreating, CreatedAt: time.Now().UnixNano(), BootID: m.bootID,
		Resources: res, StopSignal: stopSignalName(cfg, req.imageConfig.StopSignal), CgroupsPath: cgroups,
		LogPath: logPath(sb.Config.GetLogDirectory(), cfg.GetLogPath()),
	}
	return c, nil
}

// imageName is the image name ContainerStatus reports, which the kubelet
// shows as the pod status' image: the image's tag the user asked for (the
// kubelet creates from the image ID and passes the pod's image as
// user_specified_image), else the one asked for, else its first tag, as
// containerd does; the asked-for name when the image has no tag.
func imageName(asked, userSpecified string, repoTags []string) string {
	if len(repoTags) == 0 {
		return asked
	}
	for _, want := range []string{userSpecified, asked} {
		ref, err := image.ParseReference(want)
		if want == "" || err != nil {
			continue
		}
		for _, t := range repoTags {
			if t == ref.String() {
				return t
			}
		}
	}
	return repoTags[0]
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

// reserve takes the container's name in memory, which is where names
// are unique; on success it returns with c.mu held. The record is
// persisted, with the name, once the container is CREATED (markCreated):
// until then everything Create makes is below the container's own dirs,
// which recovery releases as those of a container no record knows when a
// crash cut Create short.
func (m *Manager) reserve(c *Container) error {
	c.mu.Lock()
	rec := &c.rec
	if holder, ok := m.index.Reserve(rec.ID, rec.Name, c); !ok {
		c.mu.Unlock()
		return fmt.Errorf("container name %q is reserved by container %s: %w", rec.Name, holder.rec.ID, errdefs.ErrAlreadyExists)
	}
	return nil
}

// markCreated persists the record (CREATED) and its name in one
// transaction, and publishes it.
func (m *Manager) markCreated(c *Container) error {
	c.rec.State = StateCreated
	if err := m.records.Create(c.rec.ID, c.rec.Name, &c.rec, &c.snapshot); err != nil {
		c.rec.State = StateCreating
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
	if uerr := m.releaseLocked(c, phase.Start(nil)); uerr != nil {
		m.logger(rec).Error("undo of failed CreateContainer incomplete", "error", uerr)
		return errors.Join(err, fmt.Errorf("undo: %w", uerr))
	}
	if derr := m.deleteLocked(c); derr != nil {
		return errors.Join(err, derr)
	}
	return err
}

// releaseLocked undoes what a container owns on the host: the runtime's
// container (killed), the monitor's entry, every mount below its dir (the
// rootfs, the image volumes, views left staged), and the dirs. It is
// idempotent, and right whatever the record says was done: after a crash
// a CREATING record does not say what its Create had done. An exited
// container's runtime container and mounts went at its exit
// (releaseProcessLocked) unless that failed. c.mu must be held.
func (m *Manager) releaseLocked(c *Container, timer *phase.Timer) error {
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
	timer.Mark("runtime")
	if rec.State != StateCreated || rec.RuntimeCreated {
		// The monitor knows the container once it ran the runtime for it.
		if err := m.forgetLocked(c); err != nil {
			errs = append(errs, err)
		}
	}
	timer.Mark("monitor")
	if rec.RootfsMounted || rec.State == StateCreating {
		if err := unmountBelow(m.rootDir(rec.ID)); err != nil {
			errs = append(errs, err)
		} else {
			rec.RootfsMounted = false
		}
	}
	timer.Mark("unmount")
	if len(errs) == 0 {
		if err := m.removeDirs(rec.ID); err != nil {
			errs = append(errs, err)
		}
	}
	timer.Mark("dirs")
	return errors.Join(errs...)
}
