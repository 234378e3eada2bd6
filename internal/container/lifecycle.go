package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/monitor"
	"github.com/huskrt/husk/internal/ociruntime"
	"github.com/huskrt/husk/internal/phase"
	"github.com/huskrt/husk/internal/proc"
)

// Stop stops a container: its stop signal (signal.go), then SIGKILL after
// timeout, and returns once its exit is recorded, with nothing of its
// process left (endLocked). Stopping an exited or unknown container
// succeeds, and so does stopping one that was never started, which stays
// CREATED, as in containerd.
func (m *Manager) Stop(ctx context.Context, id string, timeout time.Duration) error {
	c, err := m.index.Get(id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return m.stop(ctx, c, timeout)
}

func (m *Manager) stop(ctx context.Context, c *Container, timeout time.Duration) error {
	v := c.view()
	if v.State == StateCreated {
		// A start under way holds the lock: then there is a process to
		// stop once it returns.
		c.mu.Lock()
		started := c.rec.State != StateCreated || c.rec.RuntimeCreated
		c.mu.Unlock()
		if !started {
			return nil
		}
		v = c.view()
	}
	if v.State == StateExited || v.State == StateCreating {
		return nil
	}
	rt, err := m.opts.Runtimes.Get(v.Handler)
	if err != nil {
		return err
	}
	log := m.logger(v)
	if timeout > 0 && v.State == StateRunning {
		sig := stopSignal(v.StopSignal)
		if err := m.kill(ctx, c, rt, sig); err != nil && !exitedErr(err) {
			log.Warn("stop signal failed", "signal", sig, "error", err)
		}
		select {
		case <-c.exited:
			return nil
		case <-time.After(timeout):
		case <-ctx.Done():
			return fmt.Errorf("container %s: stop: %w", v.ID, ctx.Err())
		}
	}
	if err := m.kill(ctx, c, rt, syscall.SIGKILL); err != nil && !exitedErr(err) {
		// It may have exited (and been deleted from the runtime) after
		// we looked: then its exit is being recorded.
		select {
		case <-c.exited:
			return nil
		case <-time.After(2 * time.Second):
		}
		return fmt.Errorf("container %s: kill: %w", v.ID, err)
	}
	select {
	case <-c.exited:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("container %s: still running 30s after SIGKILL: %w", v.ID, errdefs.ErrUnavailable)
	case <-ctx.Done():
		return fmt.Errorf("container %s: stop: %w", v.ID, ctx.Err())
	}
}

// kill signals the container's init through a pidfd, checked against
// its recorded start time and boot: what the runtime's kill does for a
// container that is not paused (the CRI has no pause), without an exec of
// the runtime on StopContainer's path. A record without a start time
// (made by an older huskd) is signalled through the runtime; when that
// no longer knows the container (its state root went with a wiped state
// dir), through the pidfd all the same.
func (m *Manager) kill(ctx context.Context, c *Container, rt *ociruntime.Runtime, sig syscall.Signal) error {
	v := c.view()
	if v.PIDStart != 0 {
		return proc.Signal(identity(v), sig)
	}
	err := rt.Kill(context.WithoutCancel(ctx), v.ID, sig)
	if errors.Is(err, ociruntime.ErrNotExist) && proc.Signal(identity(v), sig) == nil {
		return nil
	}
	return err
}

// exitedErr recognises a kill of a container whose process is gone: it
// stopped, or it was deleted from the runtime once it exited.
func exitedErr(err error) bool {
	return errors.Is(err, proc.ErrGone) || errors.Is(err, ociruntime.ErrNotRunning) || errors.Is(err, ociruntime.ErrNotExist)
}

// Remove removes a container, killing it first when it runs. Removing an
// unknown container succeeds.
func (m *Manager) Remove(ctx context.Context, id string) error {
	c, err := m.index.Get(id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	timer := phase.Start(nil)
	if err := m.stop(ctx, c, 0); err != nil {
		return err
	}
	timer.Mark("stop")
	c.mu.Lock()
	defer c.mu.Unlock()
	timer.Mark("lock")
	rec := &c.rec
	if _, err := m.index.Get(rec.ID); err != nil {
		return nil // removed meanwhile
	}
	if err := m.releaseLocked(c, timer); err != nil {
		_ = m.persistLocked(c)
		return fmt.Errorf("container %s: remove: %w", rec.ID, err)
	}
	if err := m.deleteLocked(c); err != nil {
		return err
	}
	timer.Mark("record")
	m.logger(rec).Info("container removed")
	m.logger(rec).Debug("container remove phases", timer.Attrs()...)
	m.emit(rec, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT)
	return nil
}

// StopSandbox stops every container of a sandbox, for StopPodSandbox.
func (m *Manager) StopSandbox(ctx context.Context, sandboxID string) error {
	var errs []error
	for _, c := range m.index.All() {
		if c.view().SandboxID == sandboxID {
			errs = append(errs, m.stop(ctx, c, 0))
		}
	}
	return errors.Join(errs...)
}

// RemoveSandbox removes every container of a sandbox and ends its
// monitor, for RemovePodSandbox.
func (m *Manager) RemoveSandbox(ctx context.Context, sandboxID string) error {
	var errs []error
	for _, c := range m.index.All() {
		if c.view().SandboxID == sandboxID {
			errs = append(errs, m.Remove(ctx, c.view().ID))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := m.monitorClient(sandboxID).Shutdown(ctx); err != nil {
		return fmt.Errorf("pod monitor of sandbox %s: %w", sandboxID, err)
	}
	return os.RemoveAll(m.monitorDir(sandboxID))
}

func (m *Manager) monitorClient(sandboxID string) *monitor.Client {
	return monitor.For(m.monitorDir(sandboxID))
}

// goneOrUnknown tells a monitor that is gone, or that does not know the
// container (a monitor started after the one that created it was killed).
func goneOrUnknown(err error) bool {
	return errors.Is(err, monitor.ErrGone) || errdefs.IsNotFound(err)
}
