// Package container owns app containers in pod sandboxes: CreateContainer's
// steps and their rollback, start, stop, remove, status, exec, log reopen,
// resource updates and recovery after a daemon restart. Containers are
// run through the pod's monitor (internal/monitor), which stays their
// parent, copies their output into the CRI log and records their exits.
//
// State machine of a container record (Record.State):
//
//	Create: name reserved in memory
//	      CREATING --- any step fails: undo all, name released
//	          |
//	  rootfs mounted, bundle written; record persisted
//	          v
//	       CREATED --- StartContainer: runtime run through the monitor ---> RUNNING
//	          |    (a start that fails: EXITED, StartError)                    |
//	          |                                                  exit (monitor); runtime
//	          |                                                  container deleted, rootfs
//	          |                                                  unmounted
//	          |                                                            v
//	          |                                  EXITED (exit code, time, reason persisted)
//	          |                                                            |
//	          +------------------------ RemoveContainer -------------------+
//	                                           v
//	                                        (gone)
package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/image"
	"github.com/huskrt/husk/internal/lifecycle"
	"github.com/huskrt/husk/internal/monitor"
	"github.com/huskrt/husk/internal/oci"
	"github.com/huskrt/husk/internal/ociruntime"
	"github.com/huskrt/husk/internal/phase"
	"github.com/huskrt/husk/internal/proc"
	"github.com/huskrt/husk/internal/stats"
	"github.com/huskrt/husk/internal/store"
)

// State is a container's lifecycle state as persisted.
type State string

const (
	StateCreating State = "CREATING"
	StateCreated  State = "CREATED"
	StateRunning  State = "RUNNING"
	StateExited   State = "EXITED"
)

// Record is the persisted container, JSON in the store's containers bucket.
type Record struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	SandboxID string `json:"sandboxId"`
	// Config is the CRI ContainerConfig in its protobuf encoding.
	Config []byte `json:"config"`
	// ImageID is the config digest of the image; ImageName the name the
	// kubelet asked for. Layers are the image's layers (diff IDs), which
	// the container holds in the image store from create to remove.
	ImageID   string   `json:"imageId"`
	ImageName string   `json:"imageName"`
	Layers    []string `json:"layers"`
	Handler   string   `json:"handler"`
	State     State    `json:"state"`
	// Times in Unix nanoseconds.
	CreatedAt  int64  `json:"createdAt"`
	StartedAt  int64  `json:"startedAt,omitempty"`
	FinishedAt int64  `json:"finishedAt,omitempty"`
	ExitCode   int32  `json:"exitCode,omitempty"`
	Reason     string `json:"reason,omitempty"`
	Message    string `json:"message,omitempty"`
	// PID is the container's init; PIDStart (its start time, clock ticks
	// after boot) and BootID tell it from a later process with that PID
	// and from a process of another boot, when the monitor that is its
	// parent is gone (proc.Identity).
	PID      int    `json:"pid,omitempty"`
	PIDStart uint64 `json:"pidStart,omitempty"`
	BootID   string `json:"bootId,omitempty"`
	LogPath  string `json:"logPath,omitempty"`
	// RootfsMounted and RuntimeCreated say what undo and remove must
	// release.
	RootfsMounted  bool   `json:"rootfsMounted,omitempty"`
	RuntimeCreated bool   `json:"runtimeCreated,omitempty"`
	CgroupsPath    string `json:"cgroupsPath,omitempty"`
	// Resources are the current resources, after updates; StopSignal the
	// config's stop_signal, else the image's (empty: SIGTERM).
	Resources  []byte `json:"resources,omitempty"`
	StopSignal string `json:"stopSignal,omitempty"`
	// UID, GID and Groups are the resolved identity of the process.
	UID    uint32   `json:"uid"`
	GID    uint32   `json:"gid"`
	Groups []uint32 `json:"groups,omitempty"`
	// ImageMounts are the container's image volumes, mounted under its
	// root dir; their layers are held with the rootfs's.
	ImageMounts []ImageMount `json:"imageMounts,omitempty"`
}

// Container is one container in memory.
type Container struct {
	// mu serialises lifecycle operations and guards rec.
	mu     sync.Mutex
	rec    Record
	config *runtimeapi.ContainerConfig
	// exited is closed when the exit is recorded in rec.
	exited chan struct{}
	// snapshot is the last persisted copy of rec, for readers that must
	// not wait behind mu.
	snapshot lifecycle.Snapshot[Record]
	// forgotten is set once the pod's monitor dropped the container
	// (forgetLocked); guarded by mu.
	forgotten bool
	// listed is its ListContainers item, encoded (encodedItem).
	listed atomic.Pointer[listed]
}

// view returns the last published copy of the record; a container being
// created is CREATING until its record is persisted.
func (c *Container) view() *Record {
	if r := c.snapshot.Load(); r != nil {
		return r
	}
	return &Record{ID: c.rec.ID, SandboxID: c.rec.SandboxID, State: StateCreating} // immutable after creation
}

// Sandboxes is what containers need of the sandbox manager. cmd/huskd maps
// the sandbox manager's records to SandboxInfo: this package does not
// import sandbox, and what spans both (stopping and removing a pod's
// containers with it) is driven by internal/cri.
type Sandboxes interface {
	// Sandbox looks a sandbox up by ID; NotFound when it does not exist.
	Sandbox(id string) (SandboxInfo, error)
}

// Images is what containers need of the image store: the image to run and
// its unpacked layers, held from create to remove so that image GC keeps
// them even once the image is removed.
type Images interface {
	Resolve(ref string) (*image.Image, error)
	LayerDirs(img *image.Image) []string
	HoldLayers(owner string, diffIDs []string) error
	ReleaseLayers(owner string)
}

// SandboxInfo is what a container needs of its sandbox.
type SandboxInfo struct {
	ID      string
	Ready   bool
	Handler string
	Config  *runtimeapi.PodSandboxConfig
	// InfraPID holds the namespaces to join; NetnsPath is the pinned
	// network namespace (empty for host network).
	InfraPID  int
	NetnsPath string
	ShmPath   string
	// Dir holds resolv.conf, hostname and hosts.
	Dir string
	// CgroupParent is the pod's cgroup parent as its record keeps it:
	// every container of the pod goes under it.
	CgroupParent string
}

// Options configure a Manager.
type Options struct {
	// RootDir holds the writable layers (<RootDir>/containers/<id>);
	// StateDir the bundles and monitors.
	RootDir   string
	StateDir  string
	Store     *store.Store
	Images    Images
	Sandboxes Sandboxes
	// Runtimes is the runtime of each RuntimeClass handler.
	Runtimes      *ociruntime.Handlers
	MonitorBinary string
	CgroupDriver  string
	// CDISpecDirs hold the CDI spec files (a later dir overrides an
	// earlier one); none: every CDI device is unknown.
	CDISpecDirs []string
	// LayerRefresh is how often the writable layers are measured again
	// (DefaultLayerRefresh when 0): the most a writable layer's usage in
	// ContainerStats lags behind, plus one round of walks.
	LayerRefresh time.Duration
	// Events hears every lifecycle event; nil hears nothing.
	Events lifecycle.Events
	// Phases is told the time of each step of CreateContainer; nil is
	// told nothing.
	Phases phase.Observer
	Logger *slog.Logger
}

// Manager runs every app container.
type Manager struct {
	opts    Options
	log     *slog.Logger
	index   *lifecycle.Index[*Container]
	records lifecycle.Records[Record]

	// monitorStart serialises starting a sandbox's monitor, per sandbox:
	// a pod's first two CreateContainers must not start two monitors, and
	// one pod's slow start must not hold up another pod's.
	monitorStart keyedMutex
	// allCaps is huskd's own bounding set: what privileged containers get;
	// appArmor whether the kernel has AppArmor. Both are read once.
	allCaps  []string
	appArmor bool
	// cdi resolves CDI devices against the spec dirs.
	cdi *cdiDevices

	// cgroups reads the containers' cgroups, cpuRates turns their CPU
	// usage into rates; layers keeps the usage of
	// their writable layers, refreshed in the background until
	// stopRefresh; containersMount is the mount point of the filesystem
	// holding them.
	cgroups         *stats.Reader
	cpuRates        stats.CPURates
	layers          *writableLayers
	stopRefresh     context.CancelFunc
	containersMount string
	// containersDevice is the source of that mount, the device label of
	// the filesystem metrics.
	containersDevice string
	// bootID is this boot's, read once.
	bootID string

	// trashes delete the dirs of removed containers in the background:
	// the one under RootDir (writable layers), the one under StateDir
	// (bundles).
	rootTrash, stateTrash *trash

	// watcher follows, by pidfd, the containers whose monitor is gone;
	// started on first use.
	watcherOnce sync.Once
	watcher     *proc.Watcher
	watcherErr  error
}

// New makes the directories. Call Recover before serving.
func New(opts Options) (*Manager, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Events == nil {
		opts.Events = lifecycle.Discard
	}
	if opts.Images == nil || opts.Sandboxes == nil || opts.Runtimes == nil {
		return nil, errors.New("container manager: Images, Sandboxes and Runtimes are required")
	}
	for _, d := range []string{filepath.Join(opts.RootDir, "containers"), filepath.Join(opts.StateDir, "containers"), filepath.Join(opts.StateDir, "monitors")} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("container dirs: %w", err)
		}
	}
	mount, err := stats.MountPoint(filepath.Join(opts.RootDir, "containers"))
	if err != nil {
		return nil, fmt.Errorf("container dirs: %w", err)
	}
	if opts.LayerRefresh <= 0 {
		opts.LayerRefresh = DefaultLayerRefresh
	}
	m := &Manager{
		opts: opts, log: opts.Logger, index: lifecycle.NewIndex[*Container]("container"),
		records: lifecycle.Records[Record]{Store: opts.Store, Bucket: store.Containers, Names: store.ContainerName,
			What: "container", IDKey: "container_id"},
		allCaps: oci.CapabilitiesFromMask(boundingSet()), appArmor: appArmorEnabled(), bootID: proc.BootID(),
		cdi:     newCDIDevices(opts.CDISpecDirs),
		cgroups: stats.Host(), layers: newWritableLayers(), containersMount: mount, containersDevice: stats.MountSource(mount),
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.stopRefresh = cancel
	if m.rootTrash, err = newTrash(ctx, filepath.Join(opts.RootDir, "trash"), opts.Logger); err != nil {
		cancel()
		return nil, err
	}
	if m.stateTrash, err = newTrash(ctx, filepath.Join(opts.StateDir, "trash"), opts.Logger); err != nil {
		cancel()
		return nil, err
	}
	go m.refreshLoop(ctx, opts.LayerRefresh)
	return m, nil
}

// Close stops the background work of the manager (the writable layers'
// refresh, deleting removed containers' dirs, following the containers
// whose monitor is gone); containers keep running.
func (m *Manager) Close() {
	m.stopRefresh()
	m.watcherOnce.Do(func() { m.watcherErr = errors.New("closed") })
	if m.watcher != nil {
		_ = m.watcher.Close()
	}
}

// procWatcher is the watcher of containers whose monitor is gone.
func (m *Manager) procWatcher() (*proc.Watcher, error) {
	m.watcherOnce.Do(func() { m.watcher, m.watcherErr = proc.NewWatcher(m.log) })
	return m.watcher, m.watcherErr
}

// boundingSet reads this process's capability bounding set.
func boundingSet() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "CapBnd:" {
			n, _ := strconv.ParseUint(f[1], 16, 64)
			return n
		}
	}
	return 0
}

func (m *Manager) rootDir(id string) string { return filepath.Join(m.opts.RootDir, "containers", id) }
func (m *Manager) bundleDir(id string) string {
	return filepath.Join(m.opts.StateDir, "containers", id)
}
func (m *Manager) exitFile(id string) string { return filepath.Join(m.bundleDir(id), "exit.json") }

// removeDirs takes a container's dirs away; they are deleted in the
// background (trash).
func (m *Manager) removeDirs(id string) error {
	return errors.Join(m.rootTrash.remove(m.rootDir(id)), m.stateTrash.remove(m.bundleDir(id)))
}

// monitorDir is the directory of the pod's monitor.
func (m *Manager) monitorDir(sandboxID string) string {
	return monitor.Dir(m.opts.StateDir, sandboxID)
}

// identity names the container's init for good.
func identity(r *Record) proc.Identity {
	return proc.Identity{PID: r.PID, Start: r.PIDStart, BootID: r.BootID}
}

// unindex drops c from the index.
func (m *Manager) unindex(c *Container) { m.index.Remove(c.rec.ID, c.rec.Name, c) }

// persistLocked writes the record and publishes it; c.mu must be held.
func (m *Manager) persistLocked(c *Container) error {
	return m.records.Put(c.rec.ID, &c.rec, &c.snapshot)
}

// deleteLocked deletes the record and name of a container whose host state
// is released, drops it from the index and releases its image layers;
// c.mu must be held.
func (m *Manager) deleteLocked(c *Container) error {
	if err := m.records.Delete(c.rec.ID, c.rec.Name); err != nil {
		return err
	}
	m.unindex(c)
	m.opts.Images.ReleaseLayers(c.rec.ID)
	m.layers.drop(c.rec.ID)
	m.cpuRates.Forget(c.rec.ID)
	m.cgroups.Forget(c.rec.CgroupsPath)
	return nil
}

// emit tells the listener of a lifecycle event of the container.
func (m *Manager) emit(r *Record, t runtimeapi.ContainerEventType) {
	m.opts.Events.Emit(lifecycle.Event{ContainerID: r.ID, SandboxID: r.SandboxID, Type: t})
}

func (m *Manager) logger(r *Record) *slog.Logger {
	return m.log.With("container_id", r.ID, "pod_sandbox_id", r.SandboxID)
}

// IDs lists every known container, for the sandbox recovery that deletes
// the runtime containers nobody knows.
func (m *Manager) IDs() []string { return m.index.IDs() }

// decodeResources reads a record's resources back.
func decodeResources(b []byte) *runtimeapi.LinuxContainerResources {
	if len(b) == 0 {
		return nil
	}
	var r runtimeapi.LinuxContainerResources
	if json.Unmarshal(b, &r) != nil {
		return nil
	}
	return &r
}

// monitorFor starts the sandbox's monitor when none runs.
func (m *Manager) monitorFor(ctx context.Context, sandboxID string) (*monitor.Client, error) {
	dir := m.monitorDir(sandboxID)
	defer m.monitorStart.lock(dir)()
	var reaper monitor.Reaper
	if w, err := m.procWatcher(); err == nil {
		reaper = w
	}
	c, err := monitor.Ensure(ctx, m.opts.MonitorBinary, dir, reaper)
	if err != nil {
		return nil, fmt.Errorf("pod monitor of sandbox %s: %w", sandboxID, err)
	}
	return c, nil
}
