package cri

import (
	"context"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/sandbox"
	"github.com/huskrt/husk/internal/stats"
)

func (s *RuntimeServer) ContainerStats(_ context.Context, req *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	st, err := s.opts.Containers.Stats(req.GetContainerId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.ContainerStatsResponse{Stats: st}, nil
}

func (s *RuntimeServer) ListContainerStats(_ context.Context, req *runtimeapi.ListContainerStatsRequest) (*runtimeapi.ListContainerStatsResponse, error) {
	return &runtimeapi.ListContainerStatsResponse{Stats: s.opts.Containers.ListStats(req.GetFilter())}, nil
}

func (s *RuntimeServer) PodSandboxStats(_ context.Context, req *runtimeapi.PodSandboxStatsRequest) (*runtimeapi.PodSandboxStatsResponse, error) {
	rec, cfg, err := s.opts.Sandboxes.Get(req.GetPodSandboxId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.PodSandboxStatsResponse{Stats: s.podStats(rec, cfg)}, nil
}

func (s *RuntimeServer) ListPodSandboxStats(_ context.Context, req *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	f := req.GetFilter()
	var ids []string
	for _, p := range s.opts.Sandboxes.List(&runtimeapi.PodSandboxFilter{LabelSelector: f.GetLabelSelector()}) {
		if f.GetId() == "" || strings.HasPrefix(p.Id, f.GetId()) {
			ids = append(ids, p.Id)
		}
	}
	all := make([]*runtimeapi.PodSandboxStats, len(ids))
	stats.Parallel(len(ids), func(i int) {
		if rec, cfg, err := s.opts.Sandboxes.Get(ids[i]); err == nil { // else removed meanwhile
			all[i] = s.podStats(rec, cfg)
		}
	})
	out := all[:0]
	for _, st := range all {
		if st != nil {
			out = append(out, st)
		}
	}
	return &runtimeapi.ListPodSandboxStatsResponse{Stats: out}, nil
}

// podStats is a pod's CPU, memory, processes and IO pressure from its
// cgroup (podCgroup), its running containers' stats, and the counters of
// its interfaces.
func (s *RuntimeServer) podStats(rec sandbox.Record, cfg *runtimeapi.PodSandboxConfig) *runtimeapi.PodSandboxStats {
	out := &runtimeapi.PodSandboxStats{
		Attributes: &runtimeapi.PodSandboxAttributes{Id: rec.ID, Metadata: cfg.GetMetadata(), Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations()},
		Linux:      &runtimeapi.LinuxPodSandboxStats{},
	}
	ctrs, sum := s.opts.Containers.SandboxStats(rec.ID)
	out.Linux.Containers = ctrs
	if rec.State != sandbox.StateReady {
		return out
	}
	if pod := podCgroup(rec, cfg, sum); pod != nil {
		out.Linux.Cpu, out.Linux.Memory, out.Linux.Process, out.Linux.Io = pod.CRICPU(), pod.CRIMemory(), pod.CRIProcess(), pod.CRIIO()
		if nc, ok := s.podRates.NanoCores(rec.ID, pod.CPU.UsageNanos, pod.Timestamp); ok {
			out.Linux.Cpu.UsageNanoCores = &runtimeapi.UInt64Value{Value: nc}
		}
	}
	if rec.NetnsPath != "" {
		if ifs, err := s.podNetwork(rec); err == nil {
			ts := out.Linux.GetCpu().GetTimestamp()
			if ts == 0 {
				ts = time.Now().UnixNano()
			}
			out.Linux.Network = criNetwork(ifs, ts)
		}
	}
	return out
}

// forgetPodStats drops what the stats keep of a stopped pod: the files
// kept open to read its cgroups and its interfaces (that one holds its
// network namespace), and its last CPU figure.
func (s *RuntimeServer) forgetPodStats(rec sandbox.Record) {
	stats.Host().Forget(rec.CgroupParent)
	stats.Host().Forget(rec.CgroupsPath)
	if rec.NetnsPath != "" {
		stats.Host().ForgetNetwork(rec.NetnsPath)
	}
	s.podRates.Forget(rec.ID)
}

// podNetwork reads the pod's interfaces. A pod stopped meanwhile gets its
// file closed again: the read may have opened it after the stop closed it.
func (s *RuntimeServer) podNetwork(rec sandbox.Record) ([]stats.Interface, error) {
	ifs, err := stats.Host().ReadNetworkOf(rec.InfraPID, rec.NetnsPath)
	if now, _, gerr := s.opts.Sandboxes.Get(rec.ID); gerr != nil || now.State != sandbox.StateReady {
		stats.Host().ForgetNetwork(rec.NetnsPath)
	}
	return ifs, err
}

// podCgroup is the usage of the whole pod. The kubelet gives every pod a
// cgroup of its own (the config's cgroup_parent, kubepods/<qos>/pod<uid>)
// holding exactly its infra and its containers: one read of it covers the
// pod, pressure included, as containerd reads it. A pod without one sits
// in a parent shared with other pods: its infra's cgroup and the sum of
// its containers' (ctrs) are added up instead, without pressure, which
// does not add up.
func podCgroup(rec sandbox.Record, cfg *runtimeapi.PodSandboxConfig, ctrs stats.Cgroup) *stats.Cgroup {
	if cfg.GetLinux().GetCgroupParent() != "" {
		if pod, err := stats.Host().Read(rec.CgroupParent, stats.Pod); err == nil {
			return pod
		}
	}
	infra, err := stats.Host().Read(rec.CgroupsPath, stats.Pod)
	if err != nil {
		return nil
	}
	infra.CPU = stats.CPU{UsageNanos: infra.CPU.UsageNanos + ctrs.CPU.UsageNanos}
	m := ctrs.Memory
	infra.Memory = stats.Memory{
		Usage: infra.Memory.Usage + m.Usage, WorkingSet: infra.Memory.WorkingSet + m.WorkingSet, RSS: infra.Memory.RSS + m.RSS,
		PageFaults: infra.Memory.PageFaults + m.PageFaults, MajorPageFaults: infra.Memory.MajorPageFaults + m.MajorPageFaults,
	}
	infra.Pids.Current += ctrs.Pids.Current
	infra.Swap, infra.IO = nil, stats.IO{}
	return infra
}

// criNetwork is the NetworkUsage of a pod's interfaces; eth0, the CNI
// convention, is the default one.
func criNetwork(ifs []stats.Interface, ts int64) *runtimeapi.NetworkUsage {
	ns := &runtimeapi.NetworkUsage{Timestamp: ts}
	for _, i := range ifs {
		u := &runtimeapi.NetworkInterfaceUsage{Name: i.Name,
			RxBytes: &runtimeapi.UInt64Value{Value: i.RxBytes}, RxErrors: &runtimeapi.UInt64Value{Value: i.RxErrors},
			TxBytes: &runtimeapi.UInt64Value{Value: i.TxBytes}, TxErrors: &runtimeapi.UInt64Value{Value: i.TxErrors}}
		if i.Name == "eth0" || ns.DefaultInterface == nil {
			ns.DefaultInterface = u
		}
		ns.Interfaces = append(ns.Interfaces, u)
	}
	return ns
}
