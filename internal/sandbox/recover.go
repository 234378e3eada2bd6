package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/store"
)

// Recover loads every sandbox record after a (re)start and reconciles it
// with the machine: a READY sandbox whose infra still runs is watched again;
// one whose infra is gone (killed while huskd was down, or a reboot) is
// NOTREADY; a Run cut short by a crash is undone. Then what belongs to no
// sandbox is released: CNI attachments, netns pins and sandbox dirs. It
// never deletes a record a user can still see.
func (m *Manager) Recover(ctx context.Context) error {
	var recs []Record
	err := m.opts.Store.List(store.Sandboxes, func(id string, data []byte) error {
		var r Record
		if err := json.Unmarshal(data, &r); err != nil {
			m.log.Error("skipping undecodable sandbox record", "pod_sandbox_id", id, "error", err)
			return nil
		}
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		return fmt.Errorf("load sandboxes: %w", err)
	}
	var counts = map[State]int{}
	for _, r := range recs {
		cfg := &runtimeapi.PodSandboxConfig{}
		if err := proto.Unmarshal(r.Config, cfg); err != nil {
			m.log.Error("sandbox record has an undecodable config; keeping it NOTREADY", "pod_sandbox_id", r.ID, "error", err)
		}
		sb := &Sandbox{rec: r, config: cfg, done: make(chan struct{})}
		close(sb.done)
		sb.setView()
		m.index(sb)
		log := m.logger(&sb.rec, cfg)

		sb.mu.Lock()
		switch r.State {
		case StateCreating:
			// Whatever the cut-short Run did is unknown: undo every step.
			sb.rec.InfraCreated = true
			if r.NetnsPath != "" {
				sb.rec.NetworkAttached = true
			}
			if err := m.undoLocked(sb, log); err != nil {
				log.Error("undo of interrupted RunPodSandbox incomplete; kept NOTREADY", "error", err)
			} else {
				log.Info("undid interrupted RunPodSandbox")
			}
		case StateReady:
			if !m.infraAlive(&sb.rec) {
				sb.rec.State = StateNotReady
				if err := m.persistLocked(sb); err != nil {
					log.Error("persist NOTREADY", "error", err)
				}
				log.Warn("infra process gone while huskd was down: sandbox NOTREADY", "pid", r.InfraPID)
				break
			}
			p, err := m.watcher.watch(r.InfraPID, func() { m.infraExited(sb) })
			if err != nil {
				if !errors.Is(err, errProcessGone) {
					log.Error("watch infra", "error", err)
				}
				sb.rec.State = StateNotReady
				_ = m.persistLocked(sb)
				break
			}
			sb.infra = p
		}
		counts[sb.rec.State]++
		sb.mu.Unlock()
	}
	m.log.Info("sandboxes recovered", "ready", counts[StateReady], "notready", counts[StateNotReady])

	known := func(id string) bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		_, ok := m.byID[id]
		return ok
	}
	rel, err := m.opts.Network.GC(ctx, known)
	if err != nil {
		m.log.Error("release of unowned network state incomplete", "error", err)
	}
	if len(rel.Attachments) > 0 || len(rel.Netns) > 0 {
		m.log.Info("released network state of unknown sandboxes", "cni_attachments", rel.Attachments, "netns", rel.Netns)
	}
	m.deleteUnknownContainers(ctx, known)
	m.removeStrayDirs(known)
	return nil
}

// deleteUnknownContainers deletes, from every handler's runtime state, the
// containers no record knows: an infra whose record was lost would
// otherwise run, and hold its cgroup, forever.
func (m *Manager) deleteUnknownContainers(ctx context.Context, known func(string) bool) {
	for handler, rt := range m.opts.Runtimes {
		ents, err := os.ReadDir(rt.Root)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if !e.IsDir() || known(e.Name()) || (m.opts.KnownContainer != nil && m.opts.KnownContainer(e.Name())) {
				continue
			}
			if err := rt.Delete(ctx, e.Name()); err != nil {
				m.log.Error("delete container of no known sandbox", "handler", handler, "container_id", e.Name(), "error", err)
				continue
			}
			m.log.Info("deleted container of no known sandbox", "handler", handler, "container_id", e.Name())
		}
	}
}

// infraAlive tells whether the recorded infra process still runs: same boot,
// same PID, same start time.
func (m *Manager) infraAlive(r *Record) bool {
	if r.InfraPID <= 0 || r.BootID != m.bootID {
		return false
	}
	start, err := processStart(r.InfraPID)
	return err == nil && start == r.InfraStart
}

// removeStrayDirs removes sandbox dirs with no record (left by a crash
// between the dir's creation and the record's deletion).
func (m *Manager) removeStrayDirs(known func(string) bool) {
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
