package container

import (
	"context"
	"fmt"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/lifecycle"
	"github.com/huskrt/husk/internal/monitor"
)

// A container whose end nobody could record (its monitor and the monitor's
// exit file are gone: the monitor was killed, or the node rebooted) is
// reported as containerd reports a task it lost: exit code 255, reason
// "Unknown", and a message that says what happened.
const (
	unknownExitCode   = 255
	unknownExitReason = "Unknown"
)

// exitInfo is how a container ended, as it is recorded.
type exitInfo struct {
	code int32
	at   int64 // Unix nanoseconds
	// unknown, when set, says why the exit status is not known.
	unknown string
}

// unknownExit is the exit of a container whose status nobody could tell.
func unknownExit(why string) exitInfo {
	return exitInfo{code: unknownExitCode, at: time.Now().UnixNano(), unknown: why}
}

// waitExit follows a container until it exits, records its exit and
// deletes it from the runtime.
func (m *Manager) waitExit(c *Container, monitorDir string) {
	m.recordExit(c, m.followExit(c, monitorDir))
	m.deleteExited(c)
}

// followExit waits for the exit the container's monitor records. When the
// monitor cannot tell it (it was killed, or is a later monitor that never
// knew the container) and left no exit file, the container's own process
// is followed.
func (m *Manager) followExit(c *Container, monitorDir string) exitInfo {
	id := c.view().ID
	e, err := monitor.For(monitorDir).Wait(context.Background(), id)
	if err == nil {
		return exitInfo{code: e.Code, at: e.At}
	}
	if e, ok := m.recordedExit(id); ok {
		return e
	}
	m.logger(c.view()).Warn("the container's monitor cannot tell its exit: following its process", "error", err)
	return m.followProcess(c, monitorDir)
}

// recordedExit reads the exit file the monitor wrote.
func (m *Manager) recordedExit(id string) (exitInfo, bool) {
	e, ok, _ := monitor.ReadExit(m.exitFile(id))
	return exitInfo{code: e.Code, at: e.At}, ok
}

// followProcess waits, through a pidfd, for the container's init to exit:
// the one that has its recorded PID, start time and boot, never a later
// process with its PID. Its status is known when huskd is its parent (a
// monitor huskd started was killed: the init came back to huskd, a child
// subreaper); otherwise the exit is unknown.
func (m *Manager) followProcess(c *Container, monitorDir string) exitInfo {
	v := c.view()
	w, err := m.procWatcher()
	if err != nil {
		return unknownExit(fmt.Sprintf("the container's monitor is gone and its process cannot be followed: %v", err))
	}
	p, err := w.Watch(identity(v), nil)
	if err != nil {
		if v.BootID != "" && v.BootID != m.bootID {
			return unknownExit("the node rebooted while the container ran; its exit was not recorded")
		}
		return unknownExit(fmt.Sprintf("the container's monitor is gone and its process %d ended unrecorded: %v", v.PID, err))
	}
	<-p.Done()
	// A monitor that was only out of reach recorded the exit meanwhile.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if e, err := monitor.For(monitorDir).Wait(ctx, v.ID); err == nil {
		return exitInfo{code: e.Code, at: e.At}
	}
	if e, ok := m.recordedExit(v.ID); ok {
		return e
	}
	if x := p.Exit(); x.Known {
		return exitInfo{code: x.Code, at: time.Now().UnixNano()}
	}
	return unknownExit(fmt.Sprintf("the container's monitor is gone; its process %d exited with a status only its parent saw", v.PID))
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
	ctx, cancel := lifecycle.FreshContext()
	defer cancel()
	if err := m.deleteRuntime(ctx, rec); err != nil {
		m.logger(rec).Warn("delete exited container from the runtime", "error", err)
		return
	}
	rec.RuntimeCreated = false
	if err := m.persistLocked(c); err != nil {
		m.logger(rec).Error("persist", "error", err)
	}
}

// recordExit records the container's end, once.
func (m *Manager) recordExit(c *Container, exit exitInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rec := &c.rec
	if rec.State == StateExited {
		return
	}
	rec.State = StateExited
	rec.ExitCode = exit.code
	rec.FinishedAt = exit.at
	if rec.FinishedAt < rec.StartedAt {
		rec.FinishedAt = rec.StartedAt // clocks of two processes; never finished before started
	}
	switch {
	case exit.unknown != "":
		rec.Reason, rec.Message = unknownExitReason, exit.unknown
	case oomKilled(rec.CgroupsPath):
		rec.Reason = "OOMKilled"
	case exit.code == 0:
		rec.Reason = "Completed"
	default:
		rec.Reason = "Error"
	}
	if err := m.persistLocked(c); err != nil {
		m.logger(rec).Error("record exit", "error", err)
	}
	close(c.exited)
	m.logger(rec).Info("container exited", "exit_code", rec.ExitCode, "reason", rec.Reason, "message", rec.Message)
	m.emit(rec, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT)
}
