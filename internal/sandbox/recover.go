package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/monitor"
	"github.com/huskrt/husk/internal/oci"
	"github.com/huskrt/husk/internal/proc"
)

// Recover loads every sandbox record after a (re)start and reconciles it
// with the machine: a READY sandbox whose infra still runs is watched again;
// one whose infra is gone (killed while huskd was down, or a reboot) is
// NOTREADY; a Run cut short by a crash is undone. Then what belongs to no
// sandbox is released: CNI attachments, netns pins, runtime containers and
// sandbox dirs. containers are the IDs of the known app containers, which
// recover first: their runtime state is theirs, not a lost sandbox's. It
// never deletes a record a user can still see.
func (m *Manager) Recover(ctx context.Context, containers []string) error {
	recs, err := m.records.Load(m.log, readable)
	if err != nil {
		return err
	}
	counts := map[State]int{}
	for _, r := range recs {
		sb := m.load(r)
		sb.mu.Lock()
		m.reconcileLocked(sb)
		counts[sb.rec.State]++
		sb.mu.Unlock()
	}
	m.log.Info("sandboxes recovered", "ready", counts[StateReady], "notready", counts[StateNotReady])

	rel, err := m.opts.Network.GC(ctx, m.index.Has)
	if err != nil {
		m.log.Error("release of unowned network state incomplete", "error", err)
	}
	if len(rel.Attachments) > 0 || len(rel.Netns) > 0 {
		m.log.Info("released network state of unknown sandboxes", "cni_attachments", rel.Attachments, "netns", rel.Netns)
	}
	known := map[string]bool{}
	for _, id := range containers {
		known[id] = true
	}
	m.deleteUnknownContainers(ctx, func(id string) bool { return known[id] || m.index.Has(id) })
	m.removeStrayDirs(ctx, m.index.Has)
	m.endStrayMonitors(ctx)
	return nil
}

// readable refuses a record recovery cannot serve (it is quarantined):
// one not under its own ID, without a name, or whose config does not
// decode.
func readable(key string, r *Record) error {
	switch {
	case r.ID != key:
		return fmt.Errorf("the record of sandbox %q is under key %q", r.ID, key)
	case r.Name == "":
		return errors.New("no name")
	}
	if err := proto.Unmarshal(r.Config, &runtimeapi.PodSandboxConfig{}); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// load indexes a recovered record with its decoded config.
func (m *Manager) load(r Record) *Sandbox {
	cfg := &runtimeapi.PodSandboxConfig{}
	_ = proto.Unmarshal(r.Config, cfg) // readable checked it
	sb := &Sandbox{rec: r, config: cfg, done: make(chan struct{})}
	close(sb.done)
	sb.snapshot.Publish(&sb.rec)
	m.index.Add(r.ID, r.Name, sb)
	return sb
}

// reconcileLocked brings a recovered sandbox in line with the machine;
// sb.mu must be held.
func (m *Manager) reconcileLocked(sb *Sandbox) {
	log := m.logger(&sb.rec, sb.config)
	switch sb.rec.State {
	case StateCreating:
		// Whatever the cut-short Run did is unknown: undo every step.
		sb.rec.InfraCreated = true
		if sb.rec.NetnsPath != "" {
			sb.rec.NetworkAttached = true
		}
		if err := m.undoLocked(sb, log); err != nil {
			log.Error("undo of interrupted RunPodSandbox incomplete; kept NOTREADY", "error", err)
		} else {
			log.Info("undid interrupted RunPodSandbox")
		}
		return
	case StateReady:
		m.watchAgainLocked(sb, log)
	}
	if sb.rec.CgroupParent == "" && sb.rec.CgroupsPath != "" {
		// A record made before records kept the parent: the infra's
		// cgroup says where the pod is, whatever the config says now.
		sb.rec.CgroupParent = oci.CgroupParentOf(sb.rec.CgroupsPath, sb.rec.ID)
		if err := m.persistLocked(sb); err != nil {
			log.Error("persist cgroup parent", "error", err)
		}
	}
}

// watchAgainLocked watches a READY sandbox's infra again, or makes the
// sandbox NOTREADY when the infra is gone; sb.mu must be held.
func (m *Manager) watchAgainLocked(sb *Sandbox, log *slog.Logger) {
	r := &sb.rec
	if !m.infraAlive(r) {
		r.State = StateNotReady
		if err := m.persistLocked(sb); err != nil {
			log.Error("persist NOTREADY", "error", err)
		}
		log.Warn("infra process gone while huskd was down: sandbox NOTREADY", "pid", r.InfraPID)
		return
	}
	p, err := m.watcher.Watch(infraIdentity(r), func(proc.Exit) { m.infraExited(sb) })
	if err != nil {
		if !errors.Is(err, proc.ErrGone) {
			log.Error("watch infra", "error", err)
		}
		r.State = StateNotReady
		_ = m.persistLocked(sb)
		return
	}
	sb.infra = p
}

// deleteUnknownContainers deletes, from every handler's runtime state, the
// containers no record knows: an infra whose record was lost would
// otherwise run, and hold its cgroup, forever.
func (m *Manager) deleteUnknownContainers(ctx context.Context, known func(string) bool) {
	for _, rt := range m.opts.Runtimes.All() {
		ents, err := os.ReadDir(rt.Root)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if !e.IsDir() || known(e.Name()) {
				continue
			}
			if err := rt.Delete(ctx, e.Name()); err != nil {
				m.log.Error("delete container of no known sandbox", "handler", rt.Handler, "container_id", e.Name(), "error", err)
				continue
			}
			m.log.Info("deleted container of no known sandbox", "handler", rt.Handler, "container_id", e.Name())
		}
	}
}

// infraAlive tells whether the recorded infra process still runs: same boot,
// same PID, same start time.
func (m *Manager) infraAlive(r *Record) bool {
	return r.BootID == m.bootID && proc.Alive(infraIdentity(r))
}

// infraIdentity names the recorded infra process.
func infraIdentity(r *Record) proc.Identity {
	return proc.Identity{PID: r.InfraPID, Start: r.InfraStart, BootID: r.BootID}
}

// removeStrayDirs removes sandbox dirs with no record (left by a crash
// between the dir's creation and the record's deletion, or by a record
// lost or quarantined), with the direct infra they name and its monitor.
func (m *Manager) removeStrayDirs(ctx context.Context, known func(string) bool) {
	base := filepath.Join(m.opts.StateDir, "sandboxes")
	entries, err := os.ReadDir(base)
	if err != nil {
		return
	}
	for _, e := range entries {
		if known(e.Name()) {
			continue
		}
		dir := filepath.Join(base, e.Name())
		if err := m.releaseStrayInfra(ctx, e.Name()); err != nil {
			m.log.Error("stray sandbox dir: infra", "dir", dir, "error", err)
			continue
		}
		if err := unmountAll(filepath.Join(dir, "shm")); err != nil {
			m.log.Error("stray sandbox dir: unmount shm", "dir", dir, "error", err)
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			m.log.Error("stray sandbox dir", "dir", dir, "error", err)
			continue
		}
		m.log.Info("removed stray sandbox dir", "dir", dir)
	}
}

// releaseStrayInfra kills the direct infra of sandbox id, which no record
// knows, by its cgroup (named in the sandbox's dir), and ends its monitor.
func (m *Manager) releaseStrayInfra(ctx context.Context, id string) error {
	b, err := os.ReadFile(filepath.Join(m.dir(id), infraCgroupFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := m.removeInfraCgroup(ctx, string(b)); err != nil {
		return err
	}
	m.log.Info("released the infra of no known sandbox", "pod_sandbox_id", id, "cgroup", string(b))
	return m.stopMonitor(ctx, id)
}

// endStrayMonitors ends the monitors of sandboxes no record knows, which
// have nothing left to watch (a monitor still holding running containers,
// whose records outlived their sandbox's, is left to them).
func (m *Manager) endStrayMonitors(ctx context.Context) {
	base := filepath.Join(m.opts.StateDir, "monitors")
	entries, err := os.ReadDir(base)
	if err != nil {
		return
	}
	known := map[string]bool{}
	for _, id := range m.index.IDs() {
		known[filepath.Base(m.monitorDir(id))] = true
	}
	for _, e := range entries {
		if known[e.Name()] {
			continue
		}
		dir := filepath.Join(base, e.Name())
		if err := monitor.For(dir).Shutdown(ctx); err != nil {
			m.log.Warn("monitor of no known sandbox left running", "dir", dir, "error", err)
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			m.log.Error("stray monitor dir", "dir", dir, "error", err)
			continue
		}
		m.log.Info("ended the monitor of no known sandbox", "dir", dir)
	}
}
