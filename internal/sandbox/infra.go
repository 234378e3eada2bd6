package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/monitor"
	"github.com/huskrt/husk/internal/monitor/proto"
	"github.com/huskrt/husk/internal/oci"
	"github.com/huskrt/husk/internal/ociruntime"
	"github.com/huskrt/husk/internal/pausesetup"
	"github.com/huskrt/husk/internal/proc"
	"github.com/huskrt/husk/internal/stats"
)

// infraNoFile is the infra's RLIMIT_NOFILE: pause opens nothing.
const infraNoFile = 1024

// startInfra starts the pod's infra through the pod's monitor, which it
// starts first and which stays the infra's parent (and reaper) across
// huskd restarts, then watches the infra's process. The monitor forks
// husk-pause itself (DirectInfra) or runs the handler's runtime.
func (m *Manager) startInfra(ctx context.Context, sb *Sandbox, rt *ociruntime.Runtime, netnsPath string) error {
	rec := &sb.rec
	mon, err := monitor.Ensure(ctx, m.opts.MonitorBinary, m.monitorDir(rec.ID))
	if err != nil {
		return fmt.Errorf("start pod monitor: %w", err)
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
		return fmt.Errorf("start infra with handler %s: %w", rec.Handler, err)
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
	if err := m.mountRootfs(); err != nil {
		return nil, nil, err
	}
	rec.InfraCreated = true
	procs, err := m.makeInfraCgroup(rel)
	if err != nil {
		return nil, nil, err
	}
	ns := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	hostNet, ownUserns := podNamespaces(cfg)
	flags := uintptr(unix.CLONE_NEWNS)
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
	if ownUserns {
		flags |= unix.CLONE_NEWUSER
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

// mountRootfs mounts the infra root read-only, once.
func (m *Manager) mountRootfs() error {
	m.rootfsMu.Lock()
	defer m.rootfsMu.Unlock()
	if m.rootfsMounted {
		return nil
	}
	if err := mountReadOnly(m.rootfs); err != nil {
		return fmt.Errorf("infra rootfs: %w", err)
	}
	m.rootfsMounted = true
	return nil
}
