package cri

import (
	"context"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/container"
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
	var out []*runtimeapi.PodSandboxStats
	for _, p := range s.opts.Sandboxes.List(&runtimeapi.PodSandboxFilter{LabelSelector: f.GetLabelSelector()}) {
		if f.GetId() != "" && !strings.HasPrefix(p.Id, f.GetId()) {
			continue
		}
		rec, cfg, err := s.opts.Sandboxes.Get(p.Id)
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, s.podStats(rec, cfg))
	}
	return &runtimeapi.ListPodSandboxStatsResponse{Stats: out}, nil
}

// podStats adds up the infra's and the running containers' cgroups (the
// pod's cgroup parent may be shared or absent when the kubelet gives none)
// and reads the pod's interfaces in its network namespace.
func (s *RuntimeServer) podStats(rec sandbox.Record, cfg *runtimeapi.PodSandboxConfig) *runtimeapi.PodSandboxStats {
	md := cfg.GetMetadata()
	out := &runtimeapi.PodSandboxStats{
		Attributes: &runtimeapi.PodSandboxAttributes{Id: rec.ID, Metadata: md, Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations()},
		Linux:      &runtimeapi.LinuxPodSandboxStats{},
	}
	ctrs := s.opts.Containers.SandboxStats(rec.ID)
	out.Linux.Containers = ctrs
	if rec.State != sandbox.StateReady {
		return out
	}
	total, err := stats.ReadCgroup(rec.CgroupsPath)
	if err == nil {
		for _, c := range ctrs {
			if c.Cpu != nil {
				total.CPUUsageNanos += c.Cpu.UsageCoreNanoSeconds.GetValue()
			}
			if mem := c.Memory; mem != nil {
				total.MemoryUsageBytes += mem.UsageBytes.GetValue()
				total.MemoryWorkingSetBytes += mem.WorkingSetBytes.GetValue()
				total.MemoryRSSBytes += mem.RssBytes.GetValue()
				total.PageFaults += mem.PageFaults.GetValue()
				total.MajorPageFaults += mem.MajorPageFaults.GetValue()
			}
		}
		total.MemoryAvailableBytes = 0 // no single limit covers the sum
		total.Pids += s.opts.Containers.SandboxPids(rec.ID)
		out.Linux.Cpu, out.Linux.Memory = container.CPU(total), container.Memory(total)
		out.Linux.Process = &runtimeapi.ProcessUsage{Timestamp: total.Timestamp.UnixNano(), ProcessCount: &runtimeapi.UInt64Value{Value: total.Pids}}
	}
	if rec.NetnsPath != "" {
		if ifs, err := stats.ReadNetwork(rec.NetnsPath); err == nil {
			ns := &runtimeapi.NetworkUsage{Timestamp: out.Linux.GetCpu().GetTimestamp()}
			for _, i := range ifs {
				u := &runtimeapi.NetworkInterfaceUsage{Name: i.Name,
					RxBytes: &runtimeapi.UInt64Value{Value: i.RxBytes}, RxErrors: &runtimeapi.UInt64Value{Value: i.RxErrors},
					TxBytes: &runtimeapi.UInt64Value{Value: i.TxBytes}, TxErrors: &runtimeapi.UInt64Value{Value: i.TxErrors}}
				if i.Name == "eth0" || ns.DefaultInterface == nil {
					ns.DefaultInterface = u
				}
				ns.Interfaces = append(ns.Interfaces, u)
			}
			out.Linux.Network = ns
		}
	}
	return out
}
