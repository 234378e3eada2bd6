package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/lifecycle"
	"github.com/huskrt/husk/internal/monitor"
	"github.com/huskrt/husk/internal/ociruntime"
	"github.com/huskrt/husk/internal/phase"
	"github.com/huskrt/husk/internal/stats"
)

// infraKillTimeout bounds the wait for a SIGKILLed infra to exit.
const infraKillTimeout = 10 * time.Second

// Stop stops a sandbox: its infra is killed, its network torn down (CNI
// DEL, then the namespace is released) and its /dev/shm unmounted. Stopping
// a stopped or unknown sandbox succeeds, as the CRI requires. A CNI DEL that
// fails is returned and retried by the next Stop; the sandbox stays NOTREADY
// with its attachment recorded. The sandbox's containers are the caller's
// to stop first (internal/cri's StopPodSandbox does).
func (m *Manager) Stop(ctx context.Context, id string) error {
	sb, err := m.lockExisting(id)
	if sb == nil {
		return err
	}
	defer sb.mu.Unlock()
	wasReady := sb.rec.State == StateReady
	err = m.teardownLocked(sb, m.logger(&sb.rec, sb.config))
	if wasReady && sb.rec.State != StateReady {
		m.emit(sb.rec.ID, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT)
	}
	return err
}

// Remove removes a stopped sandbox's files and record, stopping it first if
// needed. Removing an unknown sandbox succeeds. The sandbox's containers
// and their monitor are the caller's to remove first (internal/cri's
// RemovePodSandbox does).
func (m *Manager) Remove(ctx context.Context, id string) error {
	sb, err := m.lockExisting(id)
	if sb == nil {
		return err
	}
	defer sb.mu.Unlock()
	log := m.logger(&sb.rec, sb.config)
	if err := m.teardownLocked(sb, log); err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	if err := m.removeLocked(sb); err != nil {
		return err
	}
	m.emit(sb.rec.ID, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT)
	return nil
}

// lockExisting returns the sandbox with its lock held, or nil when there is
// nothing to act on: an unknown or already removed ID (nil error, as Stop
// and Remove succeed for those) or a malformed one (the error).
func (m *Manager) lockExisting(id string) (*Sandbox, error) {
	sb, err := m.index.Get(id)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	sb.mu.Lock()
	if sb.removed {
		sb.mu.Unlock()
		return nil, nil
	}
	return sb, nil
}

// undoLocked reverses a Run that failed: teardown, then the files and
// the record. If teardown fails the record stays, NOTREADY, so the kubelet's
// stop and remove retry what is left.
func (m *Manager) undoLocked(sb *Sandbox, log *slog.Logger) error {
	if err := m.teardownLocked(sb, log); err != nil {
		return err
	}
	if sb.rec.LogDirCreated {
		// Only if still empty: never remove what someone put there.
		_ = os.Remove(sb.config.GetLogDirectory())
	}
	return m.removeLocked(sb)
}

// teardownLocked releases everything a sandbox holds besides its files and
// record, each step idempotent, and leaves it NOTREADY. Steps that fail are
// kept in the record for the next call. The request's context only bounds
// nothing here: cleanup always runs on a fresh bounded context, since a
// kubelet that gave up must not leave half-released network state.
func (m *Manager) teardownLocked(sb *Sandbox, log *slog.Logger) error {
	rec := &sb.rec
	ctx, cancel := lifecycle.FreshContext()
	defer cancel()
	timer := phase.Start(nil)
	// CNI DEL runs while the infra is killed and deleted and /dev/shm
	// unmounted: the DEL takes tens of milliseconds and needs none of them
	// (the netns is pinned), only the netns pin waits for it.
	awaitDEL := m.detach(ctx, sb, timer)
	steps := []struct {
		name, phase string
		run         func() error
	}{
		{"kill infra", "kill", func() error { return m.killInfra(ctx, sb) }},
		{"delete infra container", "delete", func() error { return m.deleteInfra(ctx, sb) }},
		{"/dev/shm", "shm", func() error { return m.unmountShm(sb) }},
		{"teardown network", "network_wait", awaitDEL},
		{"remove network namespace", "netns", func() error { return m.removeNetns(sb) }},
	}
	var errs []error
	for _, step := range steps {
		if err := step.run(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", step.name, err))
		}
		timer.Mark(step.phase)
	}
	if rec.State != StateCreating || len(errs) > 0 {
		rec.State = StateNotReady
	}
	// A Run being undone with nothing left over is about to be deleted,
	// and a sandbox stopped before (RemovePodSandbox after
	// StopPodSandbox) is already on disk as it is: no need to write them.
	if !(rec.State == StateCreating && len(errs) == 0) && !sb.persisted() {
		if err := m.persistLocked(sb); err != nil {
			errs = append(errs, err)
		}
	}
	timer.Mark("persist")
	log.Debug("sandbox torn down", append(timer.Attrs(), "errors", len(errs))...)
	if len(errs) > 0 {
		return fmt.Errorf("sandbox %s: %w", rec.ID, errors.Join(errs...))
	}
	return nil
}

// detach starts the CNI DEL of an attached sandbox and returns the wait
// for it, which clears NetworkAttached once the DEL succeeded.
func (m *Manager) detach(ctx context.Context, sb *Sandbox, timer *phase.Timer) (wait func() error) {
	if !sb.rec.NetworkAttached {
		return func() error { return nil }
	}
	done := make(chan error, 1)
	att := m.attachment(&sb.rec, sb.config)
	start := time.Now()
	var took time.Duration
	go func() {
		err := m.opts.Network.Teardown(ctx, att)
		took = time.Since(start)
		done <- err
	}()
	return func() error {
		err := <-done
		timer.Add("network", took) // the DEL's own time, beside kill, delete and shm
		if err != nil {
			return err
		}
		sb.rec.NetworkAttached = false
		return nil
	}
}

// killInfra SIGKILLs the watched infra through its pidfd and waits for it.
func (m *Manager) killInfra(ctx context.Context, sb *Sandbox) error {
	if sb.infra == nil {
		return nil
	}
	if err := sb.infra.Signal(unix.SIGKILL); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, infraKillTimeout)
	defer cancel()
	if err := sb.infra.Wait(ctx); err != nil {
		return err
	}
	// Its parent, the pod's monitor, reaps it: wait until it has, so that
	// the monitor, which refuses to end while its infra runs, can end. A
	// monitor that is gone, or that did not start this infra (a pod made
	// before monitors started them), has nothing to wait for.
	_, err := monitor.For(m.monitorDir(sb.rec.ID)).Wait(ctx, sb.rec.ID)
	if err != nil && !errors.Is(err, monitor.ErrGone) && !errdefs.IsNotFound(err) {
		return fmt.Errorf("infra's monitor: %w", err)
	}
	// Dead and reaped: a later teardown has nothing to kill or wait for.
	sb.infra = nil
	return nil
}

// deleteInfra deletes the infra container from its runtime, or the
// cgroup of a direct infra (killing what is left in it).
func (m *Manager) deleteInfra(ctx context.Context, sb *Sandbox) error {
	if !sb.rec.InfraCreated {
		return nil
	}
	var err error
	if sb.rec.InfraDirect {
		var rel string
		if rel, err = stats.GroupPath(sb.rec.CgroupsPath); err == nil {
			err = m.removeInfraCgroup(ctx, rel)
		}
	} else {
		var rt *ociruntime.Runtime
		if rt, err = m.opts.Runtimes.Get(sb.rec.Handler); err == nil {
			err = rt.Delete(ctx, sb.rec.ID)
		}
	}
	if err != nil {
		return err
	}
	sb.rec.InfraCreated = false
	return nil
}

// removeNetns releases the pinned namespace, only after a DEL that
// succeeded: a retried DEL still finds the interfaces it must remove.
func (m *Manager) removeNetns(sb *Sandbox) error {
	if sb.rec.NetnsPath == "" || sb.rec.NetworkAttached {
		return nil
	}
	if err := m.opts.Network.RemoveNetns(sb.rec.NetnsPath); err != nil {
		return err
	}
	sb.rec.NetnsPath = ""
	return nil
}

// unmountShm unmounts the pod's /dev/shm (idempotent).
func (m *Manager) unmountShm(sb *Sandbox) error {
	if sb.rec.ShmPath == "" {
		return nil
	}
	return unmountAll(sb.rec.ShmPath)
}

// removeLocked ends the pod's monitor and deletes the sandbox's files,
// record and name.
func (m *Manager) removeLocked(sb *Sandbox) error {
	rec := &sb.rec
	ctx, cancel := lifecycle.FreshContext()
	defer cancel()
	if err := m.stopMonitor(ctx, rec.ID); err != nil {
		return fmt.Errorf("sandbox %s: %w", rec.ID, err)
	}
	if err := os.RemoveAll(m.dir(rec.ID)); err != nil {
		return fmt.Errorf("sandbox %s: remove files: %w", rec.ID, err)
	}
	if err := m.records.Delete(rec.ID, rec.Name); err != nil {
		return err
	}
	sb.removed = true
	m.unindex(sb)
	return nil
}
