package container

import (
	"context"
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/monitor"
	"github.com/huskrt/husk/internal/store"
)

// Recover loads every container record after a daemon start. Containers
// that exited while huskd was down get the exit their monitor recorded;
// running ones are followed again; a creation a crash cut short is undone.
func (m *Manager) Recover(ctx context.Context) error {
	var recs []Record
	err := m.opts.Store.List(store.Containers, func(id string, data []byte) error {
		var r Record
		if err := json.Unmarshal(data, &r); err != nil {
			return fmt.Errorf("container %s: decode record: %w", id, err)
		}
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		return err
	}
	for _, r := range recs {
		var cfg runtimeapi.ContainerConfig
		if err := proto.Unmarshal(r.Config, &cfg); err != nil {
			return fmt.Errorf("container %s: decode config: %w", r.ID, err)
		}
		c := &Container{rec: r, config: &cfg, exited: make(chan struct{})}
		c.setView()
		m.mu.Lock()
		m.byID[r.ID] = c
		m.byName[r.Name] = c
		m.mu.Unlock()
		log := m.logger(&c.rec)
		switch r.State {
		case StateCreating:
			c.mu.Lock()
			err := m.releaseLocked(c)
			if err == nil {
				err = m.opts.Store.Delete(store.Containers, store.ContainerName, r.ID, r.Name)
			}
			c.mu.Unlock()
			if err != nil {
				log.Error("undo of interrupted CreateContainer failed", "error", err)
				continue
			}
			m.unindex(c)
			log.Info("undid a CreateContainer cut short by a restart")
		case StateExited:
			close(c.exited)
			go m.deleteExited(c)
		default:
			if e, ok, _ := monitor.ReadExit(m.exitFile(r.ID)); ok {
				m.recordExit(c, &e)
				go m.deleteExited(c)
				continue
			}
			go m.waitExit(c, m.monitorDir(r.SandboxID))
		}
	}
	m.log.Info("containers recovered", "count", len(recs))
	return nil
}
