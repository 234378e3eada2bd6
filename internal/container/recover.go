package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/phase"
	"github.com/huskrt/husk/internal/proc"
)

// Recover loads every container record after a daemon start. Each holds
// its image's layers again before image GC runs. Containers that exited
// while huskd was down get the exit their monitor recorded; running ones
// are followed again; a creation a crash cut short is undone. A record
// that cannot be read is quarantined, and what it owned on the host is
// released as that of any container no record knows.
func (m *Manager) Recover(ctx context.Context) error {
	recs, err := m.records.Load(m.log, readable)
	if err != nil {
		return err
	}
	m.awaitLeftoverStarts(ctx)
	for _, r := range recs {
		m.reconcile(ctx, m.load(r))
	}
	m.log.Info("containers recovered", "count", len(recs))
	m.releaseUnknown(ctx)
	return nil
}

// releaseUnknown releases what containers no record knows left on the
// host (a record quarantined, or lost with a store restored from an older
// copy): their runtime containers (killed), rootfs mounts and dirs, the
// writable layer included: no CRI call can reach it any more.
func (m *Manager) releaseUnknown(ctx context.Context) {
	unknown := map[string]bool{}
	for _, base := range []string{filepath.Join(m.opts.RootDir, "containers"), filepath.Join(m.opts.StateDir, "containers")} {
		ents, _ := os.ReadDir(base)
		for _, e := range ents {
			if e.IsDir() && !m.index.Has(e.Name()) {
				unknown[e.Name()] = true
			}
		}
	}
	for id := range unknown {
		log := m.log.With("container_id", id)
		if err := m.releaseUnknownOne(ctx, id); err != nil {
			log.Error("release of a container no record knows incomplete", "error", err)
			continue
		}
		log.Info("released a container no record knows: runtime container, rootfs and dirs")
	}
}

func (m *Manager) releaseUnknownOne(ctx context.Context, id string) error {
	for _, rt := range m.opts.Runtimes.All() {
		if err := rt.Delete(ctx, id); err != nil {
			return err
		}
	}
	if err := unmountBelow(m.rootDir(id)); err != nil {
		return err
	}
	return m.removeDirs(id)
}

// readable refuses a record recovery cannot serve (it is quarantined):
// one not under its own ID, without a name or a sandbox, or whose config
// does not decode.
func readable(key string, r *Record) error {
	switch {
	case r.ID != key:
		return fmt.Errorf("the record of container %q is under key %q", r.ID, key)
	case r.Name == "" || r.SandboxID == "":
		return errors.New("no name or no sandbox")
	}
	if err := proto.Unmarshal(r.Config, &runtimeapi.ContainerConfig{}); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// load indexes a recovered record with its decoded config and holds its
// image's layers and those of its image volumes.
func (m *Manager) load(r Record) *Container {
	log := m.logger(&r)
	cfg := &runtimeapi.ContainerConfig{}
	_ = proto.Unmarshal(r.Config, cfg) // readable checked it
	c := &Container{rec: r, config: cfg, exited: make(chan struct{})}
	c.snapshot.Publish(&c.rec)
	m.index.Add(r.ID, r.Name, c)
	if err := m.opts.Images.HoldLayers(r.ID, r.heldLayers()); err != nil {
		log.Error("container's image layers are missing", "error", err)
	}
	return c
}

// reconcile brings a recovered container in line with its monitor and
// the machine.
func (m *Manager) reconcile(ctx context.Context, c *Container) {
	r := c.view()
	log := m.logger(r)
	switch r.State {
	case StateCreating:
		c.mu.Lock()
		// What the cut-short Create did is unknown: undo every step.
		c.rec.RuntimeCreated = true
		err := m.releaseLocked(c, phase.Start(nil))
		if err == nil {
			err = m.deleteLocked(c)
		}
		c.mu.Unlock()
		if err != nil {
			log.Error("undo of interrupted CreateContainer failed", "error", err)
			return
		}
		log.Info("undid a CreateContainer cut short by a restart")
		return
	case StateExited:
		close(c.exited)
		go m.deleteExited(c)
		return
	}
	switch e, ok := m.recordedExit(r.ID); {
	case ok:
		if r.State == StateCreated {
			// Started by a StartContainer a crash cut short, and exited:
			// the runtime holds what is left of it.
			c.mu.Lock()
			c.rec.RuntimeCreated = true
			c.mu.Unlock()
		}
		m.recordExit(c, e)
	case r.BootID != "" && r.BootID != m.bootID:
		// Its process went with the boot, and its exit file with the
		// state dir: the exit is unknown, never RUNNING forever.
		m.recordExit(c, unknownExit("the node rebooted while the container ran; its exit was not recorded"))
	default:
		if r.State == StateCreated && !m.reconcileCreated(ctx, c) {
			return // never started: nothing runs to follow
		}
		go m.waitExit(c, m.monitorDir(r.SandboxID))
		return
	}
	go m.deleteExited(c)
}

// leftoverTimeout bounds the wait for a dead huskd's runtime calls.
const leftoverTimeout = 10 * time.Second

// awaitLeftoverStarts waits for the runtime starts a killed huskd left
// running (its own `start` calls, the `run` calls it had monitors make):
// one finishing after recovery read a CREATED container's state would
// leave it running while it is reported CREATED.
func (m *Manager) awaitLeftoverStarts(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, leftoverTimeout)
	defer cancel()
	for _, rt := range m.opts.Runtimes.All() {
		for {
			calls := append(rt.Calls("start"), rt.Calls("run")...)
			if len(calls) == 0 {
				break
			}
			select {
			case <-ctx.Done():
				m.log.Warn("runtime starts left by the last huskd still run", "handler", rt.Handler, "pids", calls)
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

// reconcileCreated brings a CREATED container in line with its runtime
// and reports whether a process of it is to be followed. One the runtime
// runs was started by a StartContainer that a crash cut short: it is
// RUNNING (the start time is lost with the crash: the time of recovery
// stands for it). One the runtime holds only created, when huskd runs the
// runtime's create and start in one call, is what a run cut short between
// the two left (its monitor killed too): it is deleted, for
// StartContainer to run the container afresh. A container an older huskd
// created in the runtime waits at the runtime's exec fifo, a child of its
// monitor, to be followed.
func (m *Manager) reconcileCreated(ctx context.Context, c *Container) (follow bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rec := &c.rec
	rt, err := m.opts.Runtimes.Get(rec.Handler)
	if err != nil {
		return rec.RuntimeCreated
	}
	st, err := rt.State(ctx, rec.ID)
	if err != nil {
		return rec.RuntimeCreated
	}
	createdHere := rec.RuntimeCreated
	rec.RuntimeCreated = true
	switch st.Status {
	case "running":
		if rec.PID == 0 && st.PID > 0 {
			rec.PID = st.PID
			rec.PIDStart, _ = proc.StartTime(st.PID)
		}
		rec.State, rec.StartedAt = StateRunning, time.Now().UnixNano()
		if err := m.persistLocked(c); err != nil {
			m.logger(rec).Error("persist RUNNING", "error", err)
			return true
		}
		m.logger(rec).Info("a StartContainer cut short by a restart had started the container: RUNNING")
		return true
	case "created":
		if createdHere {
			return true
		}
		if err := m.deleteRuntime(ctx, rec); err != nil {
			m.logger(rec).Error("delete a runtime container a cut-short start left created", "error", err)
			return false // RuntimeCreated kept: RemoveContainer deletes it
		}
		rec.RuntimeCreated = false
		m.logger(rec).Info("deleted what a start cut short left in the runtime: the container is CREATED")
		return false
	}
	return true
}
