// Package sandbox owns the pod sandbox lifecycle: RunPodSandbox's steps and
// their rollback, stop, remove, status, the infra watcher and recovery after
// a daemon restart.
//
// State machine of a sandbox record (Record.State):
//
//	Run: record persisted first
//	          |
//	          v
//	      CREATING --- any step fails: undo all, record deleted
//	          |
//	 infra started, network set up, persisted
//	          v
//	        READY ---- infra dies (watcher) ---+
//	          |                                 |
//	     StopPodSandbox                         |
//	          v                                 v
//	       NOTREADY <---------------------------+
//	          |   (NetworkAttached stays true while a CNI DEL
//	          |    has not succeeded; the next Stop retries it)
//	   RemovePodSandbox
//	          v
//	       (gone)
//
// A CREATING record found at start belongs to a Run that a crash cut short:
// recovery undoes it like a failed Run.
package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"

	"github.com/moby/sys/mountinfo"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/lifecycle"
	"github.com/huskrt/husk/internal/network"
	"github.com/huskrt/husk/internal/ociruntime"
	"github.com/huskrt/husk/internal/phase"
	"github.com/huskrt/husk/internal/proc"
	"github.com/huskrt/husk/internal/store"
)

// State is a sandbox's lifecycle state as persisted.
type State string

const (
	StateCreating State = "CREATING"
	StateReady    State = "READY"
	StateNotReady State = "NOTREADY"
)

// Record is the persisted sandbox, stored as JSON in the store's sandboxes
// bucket. The Manager owns it; every change goes through Sandbox.persist.
type Record struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// ConfigHash identifies the exact config, so a kubelet retry with the
	// same config gets the same sandbox.
	ConfigHash string `json:"configHash"`
	// Config is the CRI PodSandboxConfig in its protobuf encoding.
	Config    []byte `json:"config"`
	Handler   string `json:"handler"`
	State     State  `json:"state"`
	CreatedAt int64  `json:"createdAt"`
	// NetnsPath is the pinned network namespace; empty for host network or
	// once it is released.
	NetnsPath string   `json:"netnsPath,omitempty"`
	IPs       []string `json:"ips,omitempty"`
	// NetworkAttached is set before CNI ADD and cleared only by a CNI DEL
	// that succeeded: an attachment is never forgotten.
	NetworkAttached bool `json:"networkAttached,omitempty"`
	// InfraPID and InfraStart identify the infra process; the start time
	// (clock ticks after boot) and boot ID guard against PID reuse.
	InfraPID   int    `json:"infraPid,omitempty"`
	InfraStart uint64 `json:"infraStart,omitempty"`
	BootID     string `json:"bootId,omitempty"`
	// ShmPath is the pod's /dev/shm tmpfs, mounted by huskd; empty for
	// host IPC.
	ShmPath string `json:"shmPath,omitempty"`
	// CgroupParent is the pod's effective cgroup parent (the config's,
	// else huskd's default, else the driver's), fixed at Run: the infra
	// and every container of the pod go under it, whatever the config
	// says later. Records made before it existed get it at recovery,
	// from CgroupsPath.
	CgroupParent string `json:"cgroupParent,omitempty"`
	// CgroupsPath is the infra's cgroup, under CgroupParent.
	CgroupsPath string `json:"cgroupsPath,omitempty"`
	// InfraCreated records that the infra was asked for: the runtime's
	// container, or for a direct infra its cgroup; undo and stop delete it.
	InfraCreated bool `json:"infraCreated,omitempty"`
	// InfraDirect records that the infra is started without the runtime
	// (ociruntime.Runtime.DirectInfra), fixed before it starts: there is
	// no runtime container to delete, its cgroup is huskd's to remove.
	InfraDirect bool `json:"infraDirect,omitempty"`
	// LogDirCreated records that huskd made the pod log directory (the
	// kubelet usually has), so a failed Run removes only what it made.
	LogDirCreated bool `json:"logDirCreated,omitempty"`
	// Overhead and Resources are the pod's resources as the last
	// UpdatePodSandboxResources gave them (protobuf LinuxContainerResources),
	// shown by verbose status.
	Overhead  []byte `json:"overhead,omitempty"`
	Resources []byte `json:"resources,omitempty"`
}

// Sandbox is one sandbox in memory.
type Sandbox struct {
	// mu serialises lifecycle operations on this sandbox and guards rec
	// and config. It is held across slow steps (runtime, CNI): only this
	// sandbox waits.
	mu     sync.Mutex
	rec    Record
	config *runtimeapi.PodSandboxConfig

	// done is closed when the Run that created this sandbox finished,
	// either way; runErr is its result. Retries of the same Run wait on it.
	done   chan struct{}
	runErr error

	// removed is set once the record is deleted; guarded by mu.
	removed bool

	// infra watches the infra process; nil when none is watched.
	infra *proc.Process

	// snapshot is the last persisted copy of rec for readers (status,
	// list) that must not wait behind a slow operation holding mu.
	snapshot lifecycle.Snapshot[Record]
	// listed is its ListPodSandbox item, encoded (encodedItem).
	listed atomic.Pointer[listed]
}

// view returns the last published copy of the record.
func (sb *Sandbox) view() *Record {
	if r := sb.snapshot.Load(); r != nil {
		return r
	}
	return &Record{ID: sb.rec.ID, State: StateCreating}
}

// Options configure a Manager. cmd/huskd builds them from the config.
type Options struct {
	// StateDir holds per-sandbox runtime files (<StateDir>/sandboxes/<id>)
	// and the infra rootfs.
	StateDir string
	// NetnsDir is where Network pins namespaces (<NetnsDir>/<id>).
	NetnsDir string
	Store    *store.Store
	Network  *network.Manager
	// Runtimes is the runtime of each RuntimeClass handler.
	Runtimes *ociruntime.Handlers
	// PauseBinary is copied into the read-only infra rootfs.
	PauseBinary string
	// MonitorBinary is husk-monitor: each pod's monitor starts its infra
	// and stays its parent.
	MonitorBinary string
	CgroupDriver  string
	// CgroupParent is used when a sandbox config names none; empty is the
	// driver's default.
	CgroupParent string
	ShmSize      int64
	// InfraOOMScoreAdj is clamped to what the node allows.
	InfraOOMScoreAdj int
	// HostResolvConf is copied for pods without DNSConfig; default
	// /etc/resolv.conf.
	HostResolvConf string
	// Events hears every lifecycle event; nil hears nothing.
	Events lifecycle.Events
	// Phases is told the time of each step of RunPodSandbox; nil is told
	// nothing.
	Phases phase.Observer
	Logger *slog.Logger
}

// Manager runs every sandbox.
type Manager struct {
	opts        Options
	log         *slog.Logger
	rootfs      string
	oomScoreAdj int
	// lastCap is the node's highest capability; cgroups its mounted
	// cgroup hierarchies. Both are read once.
	lastCap int
	cgroups []hierarchy
	// rootfsMu guards rootfsMounted: the infra root is mounted read-only,
	// and the infras' mount namespace made, for the first direct infra,
	// not before (a huskd that fails to start leaves no mount).
	rootfsMu      sync.Mutex
	rootfsMounted bool
	bootID        string
	watcher       *proc.Watcher
	index         *lifecycle.Index[*Sandbox]
	records       lifecycle.Records[Record]
}

// New prepares the infra rootfs and the watcher. Call Recover before serving.
func New(opts Options) (*Manager, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.HostResolvConf == "" {
		opts.HostResolvConf = "/etc/resolv.conf"
	}
	if opts.Events == nil {
		opts.Events = lifecycle.Discard
	}
	if opts.Runtimes == nil || opts.Network == nil || opts.Store == nil {
		return nil, errors.New("sandbox manager: Runtimes, Network and Store are required")
	}
	m := &Manager{
		opts:  opts,
		log:   opts.Logger,
		index: lifecycle.NewIndex[*Sandbox]("pod sandbox"),
		records: lifecycle.Records[Record]{Store: opts.Store, Bucket: store.Sandboxes, Names: store.SandboxNames,
			What: "sandbox", IDKey: "pod_sandbox_id"},
	}
	if err := os.MkdirAll(filepath.Join(opts.StateDir, "sandboxes"), 0o711); err != nil {
		return nil, fmt.Errorf("sandbox state dir: %w", err)
	}
	if err := m.prepareInfra(); err != nil {
		return nil, err
	}
	m.oomScoreAdj = clampOOMScoreAdj(opts.InfraOOMScoreAdj, m.log)
	m.bootID = proc.BootID()
	w, err := proc.NewWatcher(m.log)
	if err != nil {
		return nil, err
	}
	m.watcher = w
	return m, nil
}

// prepareInfra makes the infra's root (mounted read-only at the first
// direct infra) and, for the handlers that start their infra directly,
// reads what the infra's setup needs to know of the node.
func (m *Manager) prepareInfra() error {
	rootfs := filepath.Join(m.opts.StateDir, "infra-rootfs")
	// A husk-pause that changed is installed into the plain dir; running
	// infras keep their own mount of the old one.
	// So is the infras' mount namespace, made again from the new root.
	for _, p := range []string{m.infraMountNS(), rootfs} {
		if mounted, _ := mountinfo.Mounted(p); mounted {
			if err := unmountAll(p); err != nil {
				return fmt.Errorf("infra rootfs: %w", err)
			}
		}
	}
	rootfs, err := prepareInfraRootfs(m.opts.StateDir, m.opts.PauseBinary)
	if err != nil {
		return err
	}
	m.rootfs = rootfs
	direct := false
	for _, rt := range m.opts.Runtimes.All() {
		direct = direct || rt.DirectInfra
	}
	if !direct {
		return nil
	}
	if m.opts.MonitorBinary == "" {
		return errors.New("sandbox manager: MonitorBinary is required to start infras directly")
	}
	if m.lastCap, err = lastCap(); err != nil {
		return err
	}
	m.cgroups, err = cgroupHierarchies()
	return err
}

// Close stops the watcher. Running pods are left alone.
func (m *Manager) Close() error { return m.watcher.Close() }

// ID returns the full ID of the sandbox id names (in full or by a unique
// prefix), whatever its state: NotFound when none does. The handlers use it
// before the steps that span the sandbox and its containers.
func (m *Manager) ID(id string) (string, error) {
	sb, err := m.index.Get(id)
	if err != nil {
		return "", err
	}
	return sb.rec.ID, nil // immutable once indexed
}

// unindex drops sb from the index.
func (m *Manager) unindex(sb *Sandbox) { m.index.Remove(sb.rec.ID, sb.rec.Name, sb) }

// persistLocked writes the record and publishes it to readers; sb.mu must
// be held.
func (m *Manager) persistLocked(sb *Sandbox) error {
	return m.records.Put(sb.rec.ID, &sb.rec, &sb.snapshot)
}

// persisted says whether the record on disk is rec as it is: the snapshot
// is published only after a write succeeded.
func (sb *Sandbox) persisted() bool {
	snap := sb.snapshot.Load()
	return snap != nil && reflect.DeepEqual(*snap, sb.rec)
}

// emit tells the listener of a lifecycle event of sandbox id.
func (m *Manager) emit(id string, t runtimeapi.ContainerEventType) {
	m.opts.Events.Emit(lifecycle.Event{ContainerID: id, SandboxID: id, Type: t})
}

// dir is the sandbox's runtime directory.
func (m *Manager) dir(id string) string {
	return filepath.Join(m.opts.StateDir, "sandboxes", id)
}

// logger returns a logger carrying the sandbox's identity.
func (m *Manager) logger(rec *Record, cfg *runtimeapi.PodSandboxConfig) *slog.Logger {
	md := cfg.GetMetadata()
	return m.log.With("pod_sandbox_id", rec.ID, "pod_namespace", md.GetNamespace(), "pod_name", md.GetName())
}

// Info is the verbose status info: what an operator debugging a pod needs.
type Info struct {
	PID            int                          `json:"pid"`
	NetnsPath      string                       `json:"netnsPath,omitempty"`
	RuntimeHandler string                       `json:"runtimeHandler"`
	RuntimeRoot    string                       `json:"runtimeRoot"`
	CgroupsPath    string                       `json:"cgroupsPath,omitempty"`
	ShmPath        string                       `json:"shmPath,omitempty"`
	State          State                        `json:"state"`
	Config         *runtimeapi.PodSandboxConfig `json:"config"`
	// Overhead and Resources are what UpdatePodSandboxResources recorded,
	// under containerd's keys.
	Overhead  *runtimeapi.ContainerResources `json:"overhead,omitempty"`
	Resources *runtimeapi.ContainerResources `json:"resources,omitempty"`
}

func (m *Manager) info(sb *Sandbox, v *Record) (map[string]string, error) {
	root := ""
	if r, err := m.opts.Runtimes.Get(v.Handler); err == nil {
		root = r.Root
	}
	b, err := json.Marshal(Info{
		PID: v.InfraPID, NetnsPath: v.NetnsPath, RuntimeHandler: v.Handler,
		RuntimeRoot: root, CgroupsPath: v.CgroupsPath, ShmPath: v.ShmPath,
		State: v.State, Config: sb.config,
		Overhead: decodeResources(v.Overhead), Resources: decodeResources(v.Resources),
	})
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: encode info: %w", v.ID, err)
	}
	return map[string]string{"info": string(b)}, nil
}
