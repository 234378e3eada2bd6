// Package container owns app containers in pod sandboxes: CreateContainer's
// steps and their rollback, start, stop, remove, status, exec, log reopen,
// resource updates and recovery after a daemon restart. Containers are
// created through the pod's monitor (internal/monitor), which stays their
// parent, copies their output into the CRI log and records their exits.
//
// State machine of a container record (Record.State):
//
//	Create: record persisted first
//	      CREATING --- any step fails: undo all, record deleted
//	          |
//	  rootfs mounted, runtime create through the monitor
//	          v
//	       CREATED --- StartContainer ---> RUNNING
//	          |                               |
//	          +---------- exit (monitor) -----+
//	                          v
//	                       EXITED (exit code, time, reason persisted)
//	                          |
//	                   RemoveContainer
//	                          v
//	                       (gone)
package container

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/ids"
	"github.com/huskrt/husk/internal/image"
	"github.com/huskrt/husk/internal/monitor"
	"github.com/huskrt/husk/internal/oci"
	"github.com/huskrt/husk/internal/ociruntime"
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
	// kubelet asked for.
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
	PID        int    `json:"pid,omitempty"`
	LogPath    string `json:"logPath,omitempty"`
	// RootfsMounted and RuntimeCreated say what undo and remove must
	// release.
	RootfsMounted  bool   `json:"rootfsMounted,omitempty"`
	RuntimeCreated bool   `json:"runtimeCreated,omitempty"`
	CgroupsPath    string `json:"cgroupsPath,omitempty"`
	// Resources are the current resources, after updates; StopSignal the
	// image's.
	Resources  []byte `json:"resources,omitempty"`
	StopSignal string `json:"stopSignal,omitempty"`
	// UID, GID and Groups are the resolved identity of the process.
	UID    uint32   `json:"uid"`
	GID    uint32   `json:"gid"`
	Groups []uint32 `json:"groups,omitempty"`
}

// Container is one container in memory.
type Container struct {
	// mu serialises lifecycle operations and guards rec.
	mu     sync.Mutex
	rec    Record
	config *runtimeapi.ContainerConfig
	// exited is closed when the exit is recorded in rec.
	exited   chan struct{}
	snapshot atomic.Pointer[Record]
}

func (c *Container) view() *Record { return c.snapshot.Load() }

func (c *Container) setView() {
	r := c.rec
	c.snapshot.Store(&r)
}

// SandboxInfo is what a container needs of its sandbox; cmd/huskd maps the
// sandbox manager's records to it (this package does not import sandbox:
// sandboxes call back here to stop and remove their containers).
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
	// CgroupParent is the pod's cgroup parent, as given or defaulted.
	CgroupParent string
}

// EventType is a container lifecycle event, for GetContainerEvents.
type EventType int

const (
	EventCreated EventType = iota
	EventStarted
	EventStopped
	EventDeleted
)

// Options configure a Manager.
type Options struct {
	// RootDir holds the writable layers (<RootDir>/containers/<id>);
	// StateDir the bundles and monitors.
	RootDir  string
	StateDir string
	Store    *store.Store
	Images   *image.Service
	// Sandbox looks a sandbox up; NotFound when it does not exist.
	Sandbox        func(id string) (SandboxInfo, error)
	Runtimes       map[string]*ociruntime.Runtime
	DefaultRuntime string
	MonitorBinary  string
	CgroupDriver   string
	OnEvent        func(c *Record, t EventType)
	Logger         *slog.Logger
}

// Manager runs every app container.
type Manager struct {
	opts Options
	log  *slog.Logger

	mu     sync.Mutex // guards the maps only
	byID   map[string]*Container
	byName map[string]*Container
	// monitorStart serialises starting a sandbox's monitor, per sandbox:
	// a pod's first two CreateContainers must not start two monitors, and
	// one pod's slow start must not hold up another pod's.
	monitorStart keyedMutex
	// allCaps is huskd's own bounding set: what privileged containers get;
	// appArmor whether the kernel has AppArmor. Both are read once.
	allCaps  []string
	appArmor bool
}

// New makes the directories. Call Recover before serving.
func New(opts Options) (*Manager, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	for _, d := range []string{filepath.Join(opts.RootDir, "containers"), filepath.Join(opts.StateDir, "containers"), filepath.Join(opts.StateDir, "monitors")} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("container dirs: %w", err)
		}
	}
	return &Manager{opts: opts, log: opts.Logger, byID: map[string]*Container{}, byName: map[string]*Container{},
		allCaps: oci.CapabilitiesFromMask(boundingSet()), appArmor: appArmorEnabled()}, nil
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

// monitorDir is short: it holds unix sockets, whose paths are limited to
// 108 bytes. 64 bits of the random sandbox ID are unique enough on a node.
func (m *Manager) monitorDir(sandboxID string) string {
	if len(sandboxID) > 16 {
		sandboxID = sandboxID[:16]
	}
	return filepath.Join(m.opts.StateDir, "monitors", sandboxID)
}

func (m *Manager) runtimeFor(handler string) (*ociruntime.Runtime, error) {
	if handler == "" {
		handler = m.opts.DefaultRuntime
	}
	r, ok := m.opts.Runtimes[handler]
	if !ok {
		return nil, fmt.Errorf("runtime handler %q is not configured: %w", handler, errdefs.ErrInvalidArgument)
	}
	return r, nil
}

// get finds a container by full ID or unique ID prefix.
func (m *Manager) get(id string) (*Container, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return ids.Find(m.byID, id, "container")
}

func (m *Manager) all() []*Container {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Container, 0, len(m.byID))
	for _, c := range m.byID {
		out = append(out, c)
	}
	return out
}

func (m *Manager) unindex(c *Container) {
	m.mu.Lock()
	if m.byID[c.rec.ID] == c {
		delete(m.byID, c.rec.ID)
	}
	if m.byName[c.rec.Name] == c {
		delete(m.byName, c.rec.Name)
	}
	m.mu.Unlock()
}

// persistLocked writes the record and publishes it; c.mu must be held.
func (m *Manager) persistLocked(c *Container) error {
	if err := m.opts.Store.Put(store.Containers, c.rec.ID, &c.rec); err != nil {
		return fmt.Errorf("container %s: persist: %w", c.rec.ID, err)
	}
	c.setView()
	return nil
}

func (m *Manager) emit(r *Record, t EventType) {
	if m.opts.OnEvent != nil {
		m.opts.OnEvent(r, t)
	}
}

func (m *Manager) logger(r *Record) *slog.Logger {
	return m.log.With("container_id", r.ID, "pod_sandbox_id", r.SandboxID)
}

// UseImages gives the manager the image store, which is made after
// containers are recovered (its GC needs LayersInUse).
func (m *Manager) UseImages(images *image.Service) { m.opts.Images = images }

// LayersInUse lists the image layers (diff IDs) of every container, which
// the image GC must keep even when their image is removed.
func (m *Manager) LayersInUse() []string {
	var out []string
	for _, c := range m.all() {
		if v := c.view(); v != nil {
			out = append(out, v.Layers...)
		}
	}
	return out
}

// Known reports whether id is a container of this manager, for the
// sandbox recovery that deletes runtime containers nobody knows.
func (m *Manager) Known(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.byID[id]
	return ok
}

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

// freshContext is for cleanup that must run even when the request ended.
func freshContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), time.Minute)
}

// monitorFor starts the sandbox's monitor when none runs.
func (m *Manager) monitorFor(ctx context.Context, sandboxID string) (*monitor.Client, error) {
	dir := m.monitorDir(sandboxID)
	defer m.monitorStart.lock(dir)()
	c, err := monitor.Ensure(ctx, m.opts.MonitorBinary, dir)
	if err != nil {
		return nil, fmt.Errorf("pod monitor of sandbox %s: %w", sandboxID, err)
	}
	return c, nil
}
