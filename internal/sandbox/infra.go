package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moby/profiles/seccomp"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/monitor"
	"github.com/huskrt/husk/internal/monitor/proto"
	"github.com/huskrt/husk/internal/oci"
	"github.com/huskrt/husk/internal/ociruntime"
	"github.com/huskrt/husk/internal/pausesetup"
	"github.com/huskrt/husk/internal/phase"
	"github.com/huskrt/husk/internal/proc"
	"github.com/huskrt/husk/internal/stats"
)

// infraNoFile is the infra's RLIMIT_NOFILE: pause opens nothing.
const infraNoFile = 1024

// monitorStart is a pod's monitor being started: its client once it
// answers (the same on every call).
type monitorStart func() (*monitor.Client, error)

// startMonitor starts the pod's monitor in the background and returns the
// wait for it, which records the "monitor" phase: the start of a Go
// process, a few milliseconds, overlaps the sandbox's files and network
// namespace, which the monitor needs neither of.
func (m *Manager) startMonitor(ctx context.Context, id string, timer *phase.Timer) monitorStart {
	type started struct {
		c    *monitor.Client
		err  error
		took time.Duration
	}
	done := make(chan started, 1)
	go func() {
		start := time.Now()
		c, err := monitor.Ensure(ctx, m.opts.MonitorBinary, m.monitorDir(id), m.watcher)
		done <- started{c, err, time.Since(start)}
	}()
	return sync.OnceValues(func() (*monitor.Client, error) {
		s := <-done
		timer.Add("monitor", s.took)
		if s.err != nil {
			return nil, fmt.Errorf("start pod monitor: %w", s.err)
		}
		return s.c, nil
	})
}

// startInfra starts the pod's infra through the pod's monitor, which
// stays the infra's parent (and reaper) across huskd restarts, then
// watches the infra's process. The monitor forks husk-pause itself
// (DirectInfra) or runs the handler's runtime.
func (m *Manager) startInfra(ctx context.Context, sb *Sandbox, rt *ociruntime.Runtime, monitorUp monitorStart, netnsPath string) error {
	rec := &sb.rec
	mon, err := monitorUp()
	if err != nil {
		return err
	}
	var in *proto.Infra
	var steps []string
	if rec.InfraDirect {
		in, steps, err = m.directInfra(sb, netnsPath)
	} else {
		in, err = m.runtimeInfra(sb, rt, netnsPath)
	}
	if err != nil {
		return err
	}
	pid, report, err := mon.StartInfra(ctx, in)
	if err == nil && rec.InfraDirect {
		err = pausesetup.ParseReport(report, steps)
	}
	if err != nil {
		return fmt.Errorf("start infra with handler %s: %w", rec.Handler, m.explainUserns(sb, err))
	}
	rec.InfraPID = pid
	id, err := proc.Self(pid)
	if err != nil {
		return fmt.Errorf("infra process %d: %w", pid, err)
	}
	rec.InfraStart = id.Start
	p, err := m.watcher.Watch(id, func(proc.Exit) { m.infraExited(sb) })
	if err != nil {
		return fmt.Errorf("infra process %d: %w", pid, err)
	}
	sb.infra = p
	return nil
}

// directInfra prepares a direct start: the infra's cgroup under the pod's
// parent, its namespaces, and the setup husk-pause runs (see
// pausesetup.Infra), with the names of its steps.
func (m *Manager) directInfra(sb *Sandbox, netnsPath string) (*proto.Infra, []string, error) {
	rec, cfg := &sb.rec, sb.config
	rel, err := stats.GroupPath(rec.CgroupsPath)
	if err != nil {
		return nil, nil, fmt.Errorf("infra cgroup %q: %w", rec.CgroupsPath, err)
	}
	// Kept beside the sandbox, so that a sandbox whose record is lost
	// still has its infra found and its cgroup removed.
	if err := os.WriteFile(filepath.Join(m.dir(rec.ID), infraCgroupFile), []byte(rel), 0o600); err != nil {
		return nil, nil, fmt.Errorf("infra cgroup: %w", err)
	}
	if err := m.prepareInfraRoot(); err != nil {
		return nil, nil, err
	}
	rec.InfraCreated = true
	procs, err := m.makeInfraCgroup(rel)
	if err != nil {
		return nil, nil, err
	}
	ns := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	hostNet, ownUserns := podNamespaces(cfg)
	var flags uintptr
	if ns.GetPid() != runtimeapi.NamespaceMode_NODE {
		flags |= unix.CLONE_NEWPID
	}
	if ns.GetIpc() != runtimeapi.NamespaceMode_NODE {
		flags |= unix.CLONE_NEWIPC
	}
	if !hostNet {
		flags |= unix.CLONE_NEWUTS
	}
	// No hostname: the UTS namespace keeps the node's, as with runc.
	opts := pausesetup.InfraOptions{NetnsPath: netnsPath, Hostname: cfg.GetHostname(), SetHostname: !hostNet && cfg.GetHostname() != "",
		Sysctls: cfg.GetLinux().GetSysctls(), Rootfs: m.rootfs, LastCap: m.lastCap, NoFile: infraNoFile}
	in := &proto.Infra{ID: rec.ID, LogPath: filepath.Join(m.dir(rec.ID), "infra.log"),
		Path: filepath.Join(m.rootfs, strings.TrimPrefix(oci.InfraPath, "/")), Args: []string{oci.InfraPath, "-infra"},
		CgroupProcs: procs, OOMScoreAdj: m.oomScoreAdj}
	if !ownUserns {
		opts.MountNamespace = m.infraMountNS()
	} else {
		// The shared mount namespace is the node's user namespace's: a
		// pod's root cannot join it, and pivots in a namespace of its own.
		flags |= unix.CLONE_NEWUSER | unix.CLONE_NEWNS
		if !hostNet {
			flags |= unix.CLONE_NEWNET
		}
		uids, gids, _ := oci.PodIDMappings(cfg)
		in.UIDMappings, in.GIDMappings = idMappings(uids), idMappings(gids)
	}
	in.Cloneflags = flags
	prog, err := pausesetup.Infra(opts)
	if err != nil {
		return nil, nil, err
	}
	if in.Setup, err = prog.Encode(); err != nil {
		return nil, nil, err
	}
	return in, prog.Names(), nil
}

// runtimeInfra writes the infra container's bundle for the handler's
// runtime, which the monitor runs.
func (m *Manager) runtimeInfra(sb *Sandbox, rt *ociruntime.Runtime, netnsPath string) (*proto.Infra, error) {
	rec := &sb.rec
	spec := oci.InfraSpec(sb.config, oci.SandboxSpec{
		ID: rec.ID, Handler: rec.Handler, RootfsPath: m.rootfs, NetnsPath: netnsPath,
		ShmPath: rec.ShmPath, CgroupsPath: rec.CgroupsPath, OOMScoreAdj: m.oomScoreAdj,
	})
	// The default profile: what a directly started infra gets is
	// narrower still (pausesetup.Filter), but this pause may be the
	// portable one, which has the Go runtime's needs.
	profile, err := seccomp.GetDefaultProfile(spec)
	if err != nil {
		return nil, fmt.Errorf("infra seccomp profile: %w", err)
	}
	spec.Linux.Seccomp = profile
	bundle := filepath.Join(m.dir(rec.ID), "bundle")
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		return nil, fmt.Errorf("infra bundle: %w", err)
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("infra spec: %w", err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		return nil, fmt.Errorf("infra spec: %w", err)
	}
	rec.InfraCreated = true
	return &proto.Infra{ID: rec.ID, LogPath: filepath.Join(m.dir(rec.ID), "infra.log"),
		Runtime: rt.Path, RuntimeRoot: rt.Root, SystemdCgroup: rt.SystemdCgroup, Bundle: bundle}, nil
}

func idMappings(in []specs.LinuxIDMapping) []proto.IDMapping {
	out := make([]proto.IDMapping, 0, len(in))
	for _, m := range in {
		out = append(out, proto.IDMapping{ContainerID: m.ContainerID, HostID: m.HostID, Size: m.Size})
	}
	return out
}

// infraCgroupFile, in the sandbox's dir, names the cgroup of a directly
// started infra.
const infraCgroupFile = "infra-cgroup"

// monitorDir is the directory of the pod's monitor.
func (m *Manager) monitorDir(id string) string { return monitor.Dir(m.opts.StateDir, id) }

// monitorStopTimeout bounds the wait for a killed infra to be reaped by
// its monitor before the monitor is ended.
const monitorStopTimeout = 10 * time.Second

// stopMonitor ends the pod's monitor once its infra exited and removes
// its dir. The pod's containers are gone by then (RemovePodSandbox removes
// them first, and a Run being undone has none).
func (m *Manager) stopMonitor(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, monitorStopTimeout)
	defer cancel()
	c := monitor.For(m.monitorDir(id))
	if err := c.Shutdown(ctx); err != nil {
		return fmt.Errorf("pod monitor: %w", err)
	}
	return os.RemoveAll(m.monitorDir(id))
}

// prepareInfraRoot mounts the infra root read-only and makes the infras'
// mount namespace, once.
func (m *Manager) prepareInfraRoot() error {
	m.rootfsMu.Lock()
	defer m.rootfsMu.Unlock()
	if m.rootfsMounted {
		return nil
	}
	if err := mountReadOnly(m.rootfs); err != nil {
		return fmt.Errorf("infra rootfs: %w", err)
	}
	if err := m.makeInfraMountNS(); err != nil {
		_ = unmountAll(m.rootfs)
		return fmt.Errorf("infra mount namespace: %w", err)
	}
	m.rootfsMounted = true
	return nil
}

// infraMountNS is where the infras' mount namespace is pinned, in a dir
// that is a private mount: a mount namespace cannot be pinned on a shared
// one.
func (m *Manager) infraMountNS() string {
	return filepath.Join(m.opts.StateDir, "infra-ns", "mnt")
}

// makeInfraMountNS makes the mount namespace every infra without a user
// namespace joins: its root is the read-only infra root, and nothing else.
// A husk-pause started in a new mount namespace pivots into that root
// (pausesetup.Root); its namespace is pinned, then it is ended.
func (m *Manager) makeInfraMountNS() error {
	pin := m.infraMountNS()
	dir := filepath.Dir(pin)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if mounted, _ := mountinfo.Mounted(dir); !mounted {
		if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind mount %s: %w", dir, err)
		}
		if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("make %s private: %w", dir, err)
		}
	}
	if err := unmountAll(pin); err != nil {
		return err
	}
	if err := os.WriteFile(pin, nil, 0o400); err != nil {
		return err
	}
	prog, err := pausesetup.Root(m.rootfs)
	if err != nil {
		return err
	}
	b, err := prog.Encode()
	if err != nil {
		return err
	}
	return m.runInfraHelper(b, prog.Names(), func(pid int) error {
		if err := unix.Mount(fmt.Sprintf("/proc/%d/ns/mnt", pid), pin, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("pin %s: %w", pin, err)
		}
		return nil
	})
}

// runInfraHelper runs husk-pause in a new mount namespace with the setup
// program b, calls done with its PID once the setup succeeded, and ends
// it.
func (m *Manager) runInfraHelper(b []byte, steps []string, done func(pid int) error) error {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "setup"), os.NewFile(uintptr(fds[1]), "setup")
	defer ours.Close()
	cmd := exec.Command(filepath.Join(m.rootfs, strings.TrimPrefix(oci.InfraPath, "/")), "-infra")
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: unix.CLONE_NEWNS}
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		return err
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	_ = ours.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := ours.Write(b); err != nil {
		return fmt.Errorf("send setup: %w", err)
	}
	report, err := io.ReadAll(ours)
	if err != nil {
		return fmt.Errorf("read setup report: %w", err)
	}
	if err := pausesetup.ParseReport(report, steps); err != nil {
		return err
	}
	return done(cmd.Process.Pid)
}
