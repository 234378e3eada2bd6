package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/sandbox"
	"github.com/huskrt/husk/internal/stats"
)

// ListMetricDescriptors describes every metric ListPodSandboxMetrics sends:
// cAdvisor's names, help and labels (internal/stats/metrics.go). The
// kubelet asks once, at start.
func (s *RuntimeServer) ListMetricDescriptors(context.Context, *runtimeapi.ListMetricDescriptorsRequest) (*runtimeapi.ListMetricDescriptorsResponse, error) {
	return &runtimeapi.ListMetricDescriptorsResponse{Descriptors: stats.MetricDescriptors()}, nil
}

// ListPodSandboxMetrics sends the metrics of every ready pod: its
// interfaces' counters, and for each of its containers CPU, memory,
// pressure, block IO, processes, spec, start time and writable layer. The
// pods are read a few at a time.
func (s *RuntimeServer) ListPodSandboxMetrics(context.Context, *runtimeapi.ListPodSandboxMetricsRequest) (*runtimeapi.ListPodSandboxMetricsResponse, error) {
	var ids []string
	for _, p := range s.opts.Sandboxes.List(nil) {
		if p.State == runtimeapi.PodSandboxState_SANDBOX_READY {
			ids = append(ids, p.Id)
		}
	}
	all := make([]*runtimeapi.PodSandboxMetrics, len(ids))
	stats.Parallel(len(ids), func(i int) {
		if rec, cfg, err := s.opts.Sandboxes.Get(ids[i]); err == nil && rec.State == sandbox.StateReady { // else gone meanwhile
			all[i] = s.podMetrics(rec, cfg)
		}
	})
	resp := &runtimeapi.ListPodSandboxMetricsResponse{}
	for _, m := range all {
		if m != nil {
			resp.PodMetrics = append(resp.PodMetrics, m)
		}
	}
	return resp, nil
}

func (s *RuntimeServer) podMetrics(rec sandbox.Record, cfg *runtimeapi.PodSandboxConfig) *runtimeapi.PodSandboxMetrics {
	md := cfg.GetMetadata()
	out := &runtimeapi.PodSandboxMetrics{PodSandboxId: rec.ID}
	if rec.NetnsPath != "" {
		if ifs, err := s.podNetwork(rec); err == nil {
			pod := stats.Labels{Container: "POD", ID: rec.ID, Name: rec.Name, Namespace: md.GetNamespace(), Pod: md.GetName()}
			out.Metrics = stats.NetworkMetrics(pod, ifs)
		}
	}
	for _, c := range s.opts.Containers.MetricSamples(rec.ID, md.GetNamespace(), md.GetName()) {
		out.ContainerMetrics = append(out.ContainerMetrics, &runtimeapi.ContainerMetrics{
			ContainerId: c.Labels.ID, Metrics: stats.ContainerMetrics(c),
		})
	}
	return out
}
