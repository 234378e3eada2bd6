package container

import (
	"context"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/monitor"
)

// Recover loads every container record after a daemon start. Each holds
// its image's layers again before image GC runs. Containers that exited
// while huskd was down get the exit their monitor recorded; running ones
// are followed again; a creation a crash cut short is undone.
func (m *Manager) Recover(ctx context.Context) error {
	recs, err := m.records.Load(m.log)
	if err != nil {
		return err
	}
	for _, r := range recs {
		m.reconcile(m.load(r))
	}
	m.log.Info("containers recovered", "count", len(recs))
	return nil
}

// load indexes a recovered record with its decoded config and holds its
// image's layers and those of its image volumes.
func (m *Manager) load(r Record) *Container {
	log := m.logger(&r)
	cfg := &runtimeapi.ContainerConfig{}
	if err := proto.Unmarshal(r.Config, cfg); err != nil {
		log.Error("container record has an undecodable config; keeping it for RemoveContainer", "error", err)
	}
	c := &Container{rec: r, config: cfg, exited: make(chan struct{})}
	c.snapshot.Publish(&c.rec)
	m.index.Add(r.ID, r.Name, c)
	if err := m.opts.Images.HoldLayers(r.ID, r.heldLayers()); err != nil {
		log.Error("container's image layers are missing", "error", err)
	}
	return c
}

// reconcile brings a recovered container in line with its monitor.
func (m *Manager) reconcile(c *Container) {
	r := c.view()
	log := m.logger(r)
	switch r.State {
	case StateCreating:
		c.mu.Lock()
		err := m.releaseLocked(c)
		if err == nil {
			err = m.deleteLocked(c)
		}
		c.mu.Unlock()
		if err != nil {
			log.Error("undo of interrupted CreateContainer failed", "error", err)
			return
		}
		log.Info("undid a CreateContainer cut short by a restart")
	case StateExited:
		close(c.exited)
		go m.deleteExited(c)
	default:
		if e, ok, _ := monitor.ReadExit(m.exitFile(r.ID)); ok {
			m.recordExit(c, &e)
			go m.deleteExited(c)
			return
		}
		go m.waitExit(c, m.monitorDir(r.SandboxID))
	}
}
