package container

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/monitor"
	mproto "github.com/huskrt/husk/internal/monitor/proto"
	"github.com/huskrt/husk/internal/ociruntime"
	"github.com/huskrt/husk/internal/phase"
	"github.com/huskrt/husk/internal/proc"
)

// Exit code and reason of a container whose start failed, as containerd
// reports it.
const (
	startErrorExitCode = 128
	startErrorReason   = "StartError"
)

// Start starts a created container: the pod's monitor has the runtime
// create and start it in one call (run --detach, one exec of the runtime
// where create and start take two) and stays its parent. A container the
// runtime holds already (created by an older huskd, which ran the
// runtime's create in CreateContainer) is started by the runtime. A start
// that fails leaves the container EXITED with the reason StartError, as
// containerd does, for the kubelet to make a new one.
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
	timer := phase.Start(m.opts.Phases)
	if err := m.runtimeStart(ctx, c, rt); err != nil {
		m.startFailedLocked(c, err)
		return fmt.Errorf("container %s: start: %w", rec.ID, err)
	}
	timer.Mark("run")
	rec.State = StateRunning
	rec.StartedAt = startedAt
	if err := m.persistLocked(c); err != nil {
		return err
	}
	timer.Mark("started")
	log := m.logger(rec)
	log.Info("container started", "pid", rec.PID)
	log.Debug("container start phases", timer.Attrs()...)
	m.emit(rec, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT)
	return nil
}

// runtimeStart runs the container (or, created in the runtime already,
// starts it) and follows its exit.
func (m *Manager) runtimeStart(ctx context.Context, c *Container, rt *ociruntime.Runtime) error {
	rec := &c.rec
	if rec.RuntimeCreated {
		switch err := rt.Start(context.WithoutCancel(ctx), rec.ID); {
		case errors.Is(err, ociruntime.ErrAlreadyStarted):
			// A StartContainer a daemon crash cut short: its runtime call
			// went on and started the container after recovery looked.
			m.logger(rec).Warn("the runtime had started the container already")
		case err != nil:
			return err
		}
		return nil
	}
	// The runtime is never killed half-way: it runs on a context of its
	// own.
	opCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 4*time.Minute)
	defer cancel()
	mon, pid, err := m.monitorRun(opCtx, c, rt)
	rec.PID = pid // set with an error too, by a monitor that created the container but whose start failed
	// The runtime clones the volume views into the container as it makes
	// it: the staged ones can go, whatever became of the run.
	if verr := dropVolumeViews(m.rootDir(rec.ID)); verr != nil {
		m.logger(rec).Warn("drop staged volume views", "error", verr)
	}
	if err != nil {
		return fmt.Errorf("run with handler %s: %w", rec.Handler, err)
	}
	// Its PID names it until the monitor reaps it.
	if start, err := proc.StartTime(pid); err == nil {
		rec.PIDStart = start
	}
	go m.waitExit(c, mon.Dir())
	return nil
}

// monitorRun has the pod's monitor run the container through the runtime,
// so that the monitor is the parent of its process and copies its output
// into the CRI log (without a log path, output.log in the bundle). A
// monitor that is not running (killed since the pod's last container) is
// started anew.
func (m *Manager) monitorRun(ctx context.Context, c *Container, rt *ociruntime.Runtime) (*monitor.Client, int, error) {
	rec := &c.rec
	bundle := m.bundleDir(rec.ID)
	logPath := rec.LogPath
	if logPath == "" {
		logPath = filepath.Join(bundle, "output.log")
	}
	cfg := c.config
	req := &mproto.Create{
		ID: rec.ID, Runtime: rt.Path, RuntimeRoot: rt.Root, SystemdCgroup: rt.SystemdCgroup,
		Bundle: bundle, LogPath: logPath, ExitFile: m.exitFile(rec.ID),
		Stdin: cfg.GetStdin(), StdinOnce: cfg.GetStdinOnce(), Tty: cfg.GetTty(),
	}
	if exe := rt.ExecPath(); exe != rt.Path {
		req.RuntimeExec = exe
	}
	start := func() error { return rt.Start(ctx, rec.ID) }
	rec.RuntimeCreated = true
	mon := m.monitorClient(rec.SandboxID)
	pid, err := mon.Run(ctx, req, start)
	if monitor.Unreached(err) {
		if mon, err = m.monitorFor(ctx, rec.SandboxID); err != nil {
			return nil, 0, err
		}
		pid, err = mon.Run(ctx, req, start)
	}
	return mon, pid, err
}

// startFailedLocked ends a container whose start failed: what the runtime
// made of it is deleted, and it is EXITED with the reason StartError and
// why. c.mu must be held.
func (m *Manager) startFailedLocked(c *Container, cause error) {
	m.releaseProcessLocked(c)
	m.recordExitLocked(c, exitInfo{code: startErrorExitCode, at: time.Now().UnixNano(), reason: startErrorReason, message: cause.Error()}, false)
}
