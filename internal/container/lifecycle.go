package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/lifecycle"
	"github.com/huskrt/husk/internal/monitor"
	mproto "github.com/huskrt/husk/internal/monitor/proto"
	"github.com/huskrt/husk/internal/ociruntime"
)

// Start starts a created container.
func (m *Manager) Start(ctx context.Context, id string) error {
	c, err := m.index.Get(id)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	rec := &c.rec
	if rec.State != StateCreated {
		return fmt.Errorf("container %s is %s, not CREATED: %w", rec.ID, strings.ToLower(string(rec.State)), errdefs.ErrFailedPrecondition)
	}
	rt, err := m.opts.Runtimes.Get(rec.Handler)
	if err != nil {
		return err
	}
	// Taken before the runtime lets the process go: a process that exits
	// at once must not seem to have finished before it started.
	startedAt := time.Now().UnixNano()
	if err := rt.Start(context.WithoutCancel(ctx), rec.ID); err != nil {
		return fmt.Errorf("container %s: start: %w", rec.ID, err)
	}
	rec.State = StateRunning
	rec.StartedAt = startedAt
	if err := m.persistLocked(c); err != nil {
		return err
	}
	m.logger(rec).Info("container started")
	m.emit(rec, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT)
	return nil
}

// waitExit follows a container until the monitor reports its exit, then
// records it.
func (m *Manager) waitExit(c *Container, monitorDir string) {
	id := c.view().ID
	mon := monitor.For(monitorDir)
	var exit *mproto.Exit
	for {
		e, err := mon.Wait(context.Background(), id)
		if err == nil {
			exit = e
			break
		}
		// The monitor is gone (killed, or it never knew the container
		// after a node crash): its exit file, if any, says how it ended.
		if e, ok, _ := monitor.ReadExit(m.exitFile(id)); ok {
			exit = &e
			break
		}
		if pid := c.view().PID; pid > 0 && processAlive(pid) && errors.Is(err, monitor.ErrGone) {
			time.Sleep(time.Second)
			continue
		}
		exit = &mproto.Exit{Code: 255, At: time.Now().UnixNano()}
		m.logger(c.view()).Warn("container's monitor is gone and no exit was recorded", "error", err)
		break
	}
	m.recordExit(c, exit)
	m.deleteExited(c)
}

// deleteExited deletes an exited container's runtime state and cgroup at
// once, as containerd deletes the task on exit: the exit reason was read
// from the cgroup already, and RemoveContainer then has no runtime exec
// left to do. A failure leaves RuntimeCreated set for Remove to retry.
func (m *Manager) deleteExited(c *Container) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rec := &c.rec
	if !rec.RuntimeCreated || rec.State != StateExited {
		return
	}
	rt, err := m.opts.Runtimes.Get(rec.Handler)
	if err != nil {
		return
	}
	ctx, cancel := lifecycle.FreshContext()
	defer cancel()
	if err := rt.Delete(ctx, rec.ID); err != nil {
		m.logger(rec).Warn("delete exited container from the runtime", "error", err)
		return
	}
	rec.RuntimeCreated = false
	if err := m.persistLocked(c); err != nil {
		m.logger(rec).Error("persist", "error", err)
	}
}

func (m *Manager) recordExit(c *Container, exit *mproto.Exit) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rec := &c.rec
	if rec.State == StateExited {
		return
	}
	rec.State = StateExited
	rec.ExitCode = exit.Code
	rec.FinishedAt = exit.At
	if rec.FinishedAt < rec.StartedAt {
		rec.FinishedAt = rec.StartedAt // clocks of two processes; never finished before started
	}
	switch {
	case oomKilled(rec.CgroupsPath):
		rec.Reason = "OOMKilled"
	case exit.Code == 0:
		rec.Reason = "Completed"
	default:
		rec.Reason = "Error"
	}
	if err := m.persistLocked(c); err != nil {
		m.logger(rec).Error("record exit", "error", err)
	}
	close(c.exited)
	m.logger(rec).Info("container exited", "exit_code", exit.Code, "reason", rec.Reason)
	m.emit(rec, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT)
}

func processAlive(pid int) bool {
	return unix.Kill(pid, 0) == nil
}

// Stop stops a container: its stop signal (signal.go), then
// SIGKILL after timeout. Stopping an exited or unknown container succeeds.
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
		if err := rt.Kill(context.WithoutCancel(ctx), v.ID, sig); err != nil && !exitedErr(err) {
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
	if err := rt.Kill(context.WithoutCancel(ctx), v.ID, syscall.SIGKILL); err != nil && !exitedErr(err) {
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

// exitedErr recognises a kill of a container whose process is gone: it
// stopped, or it was deleted from the runtime once it exited.
func exitedErr(err error) bool {
	return errors.Is(err, ociruntime.ErrNotRunning) || errors.Is(err, ociruntime.ErrNotExist)
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
	if err := m.stop(ctx, c, 0); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	rec := &c.rec
	if _, err := m.index.Get(rec.ID); err != nil {
		return nil // removed meanwhile
	}
	if err := m.releaseLocked(c); err != nil {
		_ = m.persistLocked(c)
		return fmt.Errorf("container %s: remove: %w", rec.ID, err)
	}
	if err := m.deleteLocked(c); err != nil {
		return err
	}
	m.logger(rec).Info("container removed")
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
