package container

import (
	"context"
	"fmt"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/lifecycle"
	"github.com/huskrt/husk/internal/monitor"
	"github.com/huskrt/husk/internal/monitor/proto"
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
	// reason and message, when set, are recorded as they are (an exit
	// nobody saw, a start that failed); otherwise the reason comes from
	// the exit code and the OOM killer.
	reason, message string
}

// unknownExit is the exit of a container whose status nobody could tell.
func unknownExit(why string) exitInfo {
	return exitInfo{code: unknownExitCode, at: time.Now().UnixNano(), reason: unknownExitReason, message: why}
}

// waitExit follows a container until it exits, then ends it (endLocked).
// The monitor's answer is awaited by a goroutine that only reads it
// (monitor.Client.WaitFunc): one per running container, for its whole life.
func (m *Manager) waitExit(c *Container, monitorDir string) {
	monitor.For(monitorDir).WaitFunc(c.view().ID, func(e *proto.Exit, err error) {
		exit := m.exitAfterWait(c, monitorDir, e, err)
		c.mu.Lock()
		defer c.mu.Unlock()
		m.endLocked(c, exit)
	})
}

// endLocked ends a container that exited, once: how it ended is read (the
// OOM kill from its cgroup, before the cgroup goes), then what its process
// held is released (releaseProcessLocked), and only then is EXITED
// persisted and published. So StopContainer, which waits for EXITED,
// returns with nothing of the container's process left, as containerd's
// does (its task is deleted on exit), and RemoveContainer has no runtime
// exec and no unmount left to do. c.mu must be held.
func (m *Manager) endLocked(c *Container, exit exitInfo) {
	if c.rec.State == StateExited {
		return
	}
	oom := exit.reason == "" && oomKilled(c.rec.CgroupsPath)
	m.releaseProcessLocked(c)
	m.forgetLocked(c)
	m.recordExitLocked(c, exit, oom)
}

// forgetLocked has the pod's monitor drop a container whose exit huskd
// has: nothing is asked of the monitor about it any more (its exit file
// stays for a restarted huskd). A monitor that is gone or never knew it
// has nothing to drop. c.mu must be held.
func (m *Manager) forgetLocked(c *Container) error {
	if c.forgotten {
		return nil
	}
	ctx, cancel := lifecycle.FreshContext()
	defer cancel()
	if err := m.monitorClient(c.rec.SandboxID).Forget(ctx, c.rec.ID); err != nil && !goneOrUnknown(err) {
		return fmt.Errorf("monitor: %w", err)
	}
	c.forgotten = true
	return nil
}

// exitAfterWait is the exit the container's monitor recorded, given its
// answer to a wait. When the monitor cannot tell it (it was killed, or is
// a later monitor that never knew the container) and left no exit file,
// the container's own process is followed.
func (m *Manager) exitAfterWait(c *Container, monitorDir string, e *proto.Exit, err error) exitInfo {
	id := c.view().ID
	if err == nil && e != nil {
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

// deleteExited releases, after a restart, what the process of a container
// recorded EXITED still holds (releaseProcessLocked) and persists that it
// is released.
func (m *Manager) deleteExited(c *Container) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rec := &c.rec
	if rec.State != StateExited || !m.releaseProcessLocked(c) {
		return
	}
	if err := m.persistLocked(c); err != nil {
		m.logger(rec).Error("persist", "error", err)
	}
}

// releaseProcessLocked releases what an exited container's process held:
// its runtime container and cgroup (deleteRuntime), then its rootfs and
// image volume mounts. A step that fails keeps its flag (RuntimeCreated,
// RootfsMounted) for RemoveContainer to retry. It reports whether a flag
// changed. c.mu must be held.
func (m *Manager) releaseProcessLocked(c *Container) (changed bool) {
	rec := &c.rec
	log := m.logger(rec)
	if rec.RuntimeCreated {
		ctx, cancel := lifecycle.FreshContext()
		defer cancel()
		if err := m.deleteRuntime(ctx, rec); err != nil {
			log.Warn("delete exited container from the runtime", "error", err)
			return false
		}
		rec.RuntimeCreated, changed = false, true
	}
	if rec.RootfsMounted {
		if err := unmountBelow(m.rootDir(rec.ID)); err != nil {
			log.Warn("unmount exited container's rootfs", "error", err)
			return changed
		}
		rec.RootfsMounted, changed = false, true
	}
	return changed
}

// recordExit records the end of a container found exited at recovery.
func (m *Manager) recordExit(c *Container, exit exitInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rec.State != StateExited {
		m.recordExitLocked(c, exit, exit.reason == "" && oomKilled(c.rec.CgroupsPath))
	}
}

// recordExitLocked persists and publishes the container's end, closes
// c.exited and tells the listeners; oom says the kernel's OOM killer
// killed a process of its cgroup. c.mu must be held.
func (m *Manager) recordExitLocked(c *Container, exit exitInfo, oom bool) {
	rec := &c.rec
	rec.State = StateExited
	rec.ExitCode = exit.code
	rec.FinishedAt = exit.at
	if rec.FinishedAt < rec.StartedAt {
		rec.FinishedAt = rec.StartedAt // clocks of two processes; never finished before started
	}
	switch {
	case exit.reason != "":
		rec.Reason, rec.Message = exit.reason, exit.message
	case oom:
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
