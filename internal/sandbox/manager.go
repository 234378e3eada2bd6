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
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/ids"
	"github.com/huskrt/husk/internal/network"
	"github.com/huskrt/husk/internal/ociruntime"
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
	ShmPath     string `json:"shmPath,omitempty"`
	CgroupsPath string `json:"cgroupsPath,omitempty"`
	// InfraCreated records that the runtime was asked to create the infra
	// container, so undo and stop know to delete it.
	InfraCreated bool `json:"infraCreated,omitempty"`
	// LogDirCreated records that huskd made the pod log directory (the
	// kubelet usually has), so a failed Run removes only what it made.
	LogDirCreated bool `json:"logDirCreated,omitempty"`
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
	infra *watchedProcess

	// snapshot is a copy of rec for readers (status, list) that must not
	// wait behind a slow operation holding mu.
	snapshot atomic.Pointer[Record]
}

// view returns the last published copy of the record.
func (sb *Sandbox) view() *Record {
	if r := sb.snapshot.Load(); r != nil {
		return r
	}
	return &Record{ID: sb.rec.ID, State: StateCreating}
}

// setView publishes rec; sb.mu must be held.
func (sb *Sandbox) setView() {
	r := sb.rec
	r.IPs = append([]string(nil), sb.rec.IPs...)
	sb.snapshot.Store(&r)
}

// EventType is a sandbox lifecycle event, for GetContainerEvents.
type EventType int

const (
	EventCreated EventType = iota
	EventStarted
	EventStopped
	EventDeleted
)

// Options configure a Manager. cmd/huskd builds them from the config.
type Options struct {
	// StateDir holds per-sandbox runtime files (<StateDir>/sandboxes/<id>)
	// and the infra rootfs.
	StateDir string
	// NetnsDir is where Network pins namespaces (<NetnsDir>/<id>).
	NetnsDir string
	Store    *store.Store
	Network  *network.Manager
	// Runtimes maps handler names to their runtime; DefaultRuntime is used
	// for the empty handler.
	Runtimes       map[string]*ociruntime.Runtime
	DefaultRuntime string
	// PauseBinary is copied into the read-only infra rootfs.
	PauseBinary  string
	CgroupDriver string
	// CgroupParent is used when a sandbox config names none.
	CgroupParent string
	ShmSize      int64
	// InfraOOMScoreAdj is clamped to what the node allows.
	InfraOOMScoreAdj int
	// HostResolvConf is copied for pods without DNSConfig; default
	// /etc/resolv.conf.
	HostResolvConf string
	// StopContainers, when set, stops the sandbox's containers before its
	// infra is killed.
	StopContainers func(ctx context.Context, sandboxID string) error
	// RemoveContainers, when set, removes the sandbox's containers (and
	// their monitor) before the sandbox's files go.
	RemoveContainers func(ctx context.Context, sandboxID string) error
	// KnownContainer, when set, tells recovery which runtime containers
	// that are not sandboxes belong to a known container.
	KnownContainer func(id string) bool
	// OnEvent, when set, hears every lifecycle event; it must not block.
	OnEvent func(sandboxID string, t EventType)
	Logger  *slog.Logger
}

// Manager runs every sandbox.
type Manager struct {
	opts        Options
	log         *slog.Logger
	rootfs      string
	oomScoreAdj int
	bootID      string
	watcher     *watcher

	// mu guards the index maps only, never a sandbox's state.
	mu     sync.Mutex
	byID   map[string]*Sandbox
	byName map[string]*Sandbox
}

// New prepares the infra rootfs and the watcher. Call Recover before serving.
func New(opts Options) (*Manager, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.HostResolvConf == "" {
		opts.HostResolvConf = "/etc/resolv.conf"
	}
	if _, ok := opts.Runtimes[opts.DefaultRuntime]; !ok {
		return nil, fmt.Errorf("default runtime %q is not configured", opts.DefaultRuntime)
	}
	m := &Manager{
		opts:   opts,
		log:    opts.Logger,
		byID:   map[string]*Sandbox{},
		byName: map[string]*Sandbox{},
	}
	if err := os.MkdirAll(filepath.Join(opts.StateDir, "sandboxes"), 0o711); err != nil {
		return nil, fmt.Errorf("sandbox state dir: %w", err)
	}
	rootfs, err := prepareInfraRootfs(opts.StateDir, opts.PauseBinary)
	if err != nil {
		return nil, err
	}
	m.rootfs = rootfs
	m.oomScoreAdj = clampOOMScoreAdj(opts.InfraOOMScoreAdj, m.log)
	m.bootID = readBootID()
	w, err := newWatcher(m.log)
	if err != nil {
		return nil, err
	}
	m.watcher = w
	return m, nil
}

// Close stops the watcher. Running pods are left alone.
func (m *Manager) Close() error { return m.watcher.close() }

// runtimeFor resolves a RuntimeClass handler.
func (m *Manager) runtimeFor(handler string) (*ociruntime.Runtime, string, error) {
	if handler == "" {
		handler = m.opts.DefaultRuntime
	}
	r, ok := m.opts.Runtimes[handler]
	if !ok {
		return nil, "", fmt.Errorf("runtime handler %q is not configured: %w", handler, errdefs.ErrInvalidArgument)
	}
	return r, handler, nil
}

// get finds a sandbox by full ID or unique ID prefix, as crictl users type.
func (m *Manager) get(id string) (*Sandbox, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return ids.Find(m.byID, id, "pod sandbox")
}

// sandboxes returns a snapshot of the index.
func (m *Manager) sandboxes() []*Sandbox {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Sandbox, 0, len(m.byID))
	for _, sb := range m.byID {
		out = append(out, sb)
	}
	return out
}

func (m *Manager) index(sb *Sandbox) {
	m.mu.Lock()
	m.byID[sb.rec.ID] = sb
	m.byName[sb.rec.Name] = sb
	m.mu.Unlock()
}

func (m *Manager) unindex(sb *Sandbox) {
	m.mu.Lock()
	if m.byID[sb.rec.ID] == sb {
		delete(m.byID, sb.rec.ID)
	}
	if m.byName[sb.rec.Name] == sb {
		delete(m.byName, sb.rec.Name)
	}
	m.mu.Unlock()
}

// persistLocked writes the record and publishes it to readers; sb.mu must
// be held.
func (m *Manager) persistLocked(sb *Sandbox) error {
	if err := m.opts.Store.Put(store.Sandboxes, sb.rec.ID, &sb.rec); err != nil {
		return fmt.Errorf("sandbox %s: persist: %w", sb.rec.ID, err)
	}
	sb.setView()
	return nil
}

func (m *Manager) emit(id string, t EventType) {
	if m.opts.OnEvent != nil {
		m.opts.OnEvent(id, t)
	}
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
}

func (m *Manager) info(sb *Sandbox, v *Record) (map[string]string, error) {
	root := ""
	if r, _, err := m.runtimeFor(v.Handler); err == nil {
		root = r.Root
	}
	b, err := json.Marshal(Info{
		PID: v.InfraPID, NetnsPath: v.NetnsPath, RuntimeHandler: v.Handler,
		RuntimeRoot: root, CgroupsPath: v.CgroupsPath, ShmPath: v.ShmPath,
		State: v.State, Config: sb.config,
	})
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: encode info: %w", v.ID, err)
	}
	return map[string]string{"info": string(b)}, nil
}

// freshContext is for cleanup: the request's context may be spent, but undo
// and CNI DEL must still run, bounded.
func freshContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), time.Minute)
}
