package e2e

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// drain reads a server stream to its end: the items of every message, and
// how many messages there were.
func drain[M any, T any](t *testing.T, s grpc.ServerStreamingClient[M], err error, items func(*M) []T) ([]T, int, error) {
	t.Helper()
	if err != nil {
		return nil, 0, err
	}
	var out []T
	msgs := 0
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return out, msgs, nil
		}
		if err != nil {
			return out, msgs, err
		}
		msgs++
		got := items(m)
		if len(got) == 0 {
			t.Errorf("a stream message with no item")
		}
		out = append(out, got...)
	}
}

func sortedIDs[T any](items []T, id func(T) string) string {
	var out []string
	for _, it := range items {
		out = append(out, id(it))
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

// The Stream* calls (CRIListStreaming) return what their List* calls
// return, filters included, each item once, in messages of at least one
// item and no message for an empty result. Six pods with 200 KiB of
// annotations each take two messages where ListPodSandbox sends one.
func TestListStreaming(t *testing.T) {
	t.Parallel()
	e := containerEnv(t)
	var pods []string
	big := strings.Repeat("x", 200<<10)
	for i := 0; i < 6; i++ {
		pod := e.podConfig(fmt.Sprintf("ls-%d", i))
		pod.Annotations["big"] = big
		id := e.runPod(pod, []string{"runc", "crun"}[i%2])
		pods = append(pods, id)
		if i < 3 { // containers in half of them
			e.run(id, pod, ctrConfig("c", "sleep", "3600"))
		}
	}
	ctx := e.ctx()
	podID := func(p *runtimeapi.PodSandbox) string { return p.Id }
	podsOf := func(m *runtimeapi.StreamPodSandboxesResponse) []*runtimeapi.PodSandbox { return m.PodSandboxes }
	ctrsOf := func(m *runtimeapi.StreamContainersResponse) []*runtimeapi.Container { return m.Containers }
	cstatsOf := func(m *runtimeapi.StreamContainerStatsResponse) []*runtimeapi.ContainerStats { return m.ContainerStats }
	pstatsOf := func(m *runtimeapi.StreamPodSandboxStatsResponse) []*runtimeapi.PodSandboxStats {
		return m.PodSandboxStats
	}
	metricsOf := func(m *runtimeapi.StreamPodSandboxMetricsResponse) []*runtimeapi.PodSandboxMetrics {
		return m.PodSandboxMetrics
	}
	imagesOf := func(m *runtimeapi.StreamImagesResponse) []*runtimeapi.Image { return m.Images }

	list, err := e.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	s1, err := e.rt.StreamPodSandboxes(ctx, &runtimeapi.StreamPodSandboxesRequest{})
	items, msgs, err := drain(t, s1, err, podsOf)
	if err != nil || sortedIDs(items, podID) != sortedIDs(list.Items, podID) || len(items) != 6 || msgs != 2 {
		t.Errorf("StreamPodSandboxes: %d items in %d messages, %v; ListPodSandbox %d", len(items), msgs, err, len(list.Items))
	}
	s1, err = e.rt.StreamPodSandboxes(ctx, &runtimeapi.StreamPodSandboxesRequest{Filter: &runtimeapi.PodSandboxFilter{Id: pods[1]}})
	if items, _, err := drain(t, s1, err, podsOf); err != nil ||
		len(items) != 1 || items[0].Id != pods[1] {
		t.Errorf("StreamPodSandboxes by id: %v, %v", items, err)
	}
	s1, err = e.rt.StreamPodSandboxes(ctx, &runtimeapi.StreamPodSandboxesRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"app": "nosuch"}}})
	if items, msgs, err := drain(t, s1, err, podsOf); err != nil || len(items) != 0 || msgs != 0 {
		t.Errorf("StreamPodSandboxes matching nothing: %d items in %d messages, %v", len(items), msgs, err)
	}
	s1, err = e.rt.StreamPodSandboxes(ctx, &runtimeapi.StreamPodSandboxesRequest{Filter: &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: 7}}})
	if _, _, err := drain(t, s1, err, podsOf); status.Code(err) != codes.InvalidArgument {
		t.Errorf("StreamPodSandboxes with an unknown state: %v, want InvalidArgument as ListPodSandbox", err)
	}

	ctrs, err := e.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ctrID := func(c *runtimeapi.Container) string { return c.Id }
	s2, err := e.rt.StreamContainers(ctx, &runtimeapi.StreamContainersRequest{})
	if items, _, err := drain(t, s2, err, ctrsOf); err != nil ||
		len(items) != 3 || sortedIDs(items, ctrID) != sortedIDs(ctrs.Containers, ctrID) {
		t.Errorf("StreamContainers: %v, %v; ListContainers %v", items, err, ctrs.Containers)
	}
	s2, err = e.rt.StreamContainers(ctx, &runtimeapi.StreamContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: pods[2]}})
	if items, _, err := drain(t, s2, err, ctrsOf); err != nil ||
		len(items) != 1 || items[0].PodSandboxId != pods[2] {
		t.Errorf("StreamContainers of one pod: %v, %v", items, err)
	}

	statID := func(s *runtimeapi.ContainerStats) string { return s.Attributes.Id }
	cstats, err := e.rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	s3, err := e.rt.StreamContainerStats(ctx, &runtimeapi.StreamContainerStatsRequest{})
	if items, _, err := drain(t, s3, err, cstatsOf); err != nil ||
		len(items) != 3 || sortedIDs(items, statID) != sortedIDs(cstats.Stats, statID) || items[0].Cpu == nil {
		t.Errorf("StreamContainerStats: %v, %v", items, err)
	}

	pstatID := func(s *runtimeapi.PodSandboxStats) string { return s.Attributes.Id }
	s4, err := e.rt.StreamPodSandboxStats(ctx, &runtimeapi.StreamPodSandboxStatsRequest{Filter: &runtimeapi.PodSandboxStatsFilter{Id: pods[0]}})
	if items, _, err := drain(t, s4, err, pstatsOf); err != nil ||
		sortedIDs(items, pstatID) != pods[0] || items[0].Linux.GetMemory() == nil {
		t.Errorf("StreamPodSandboxStats of one pod: %v, %v", items, err)
	}

	// The same answer as ListPodSandboxMetrics, whatever it is.
	metrics, listErr := e.rt.ListPodSandboxMetrics(ctx, &runtimeapi.ListPodSandboxMetricsRequest{})
	s5, err := e.rt.StreamPodSandboxMetrics(ctx, &runtimeapi.StreamPodSandboxMetricsRequest{})
	mitems, _, err := drain(t, s5, err, metricsOf)
	metricID := func(m *runtimeapi.PodSandboxMetrics) string { return m.PodSandboxId }
	if status.Code(err) != status.Code(listErr) || sortedIDs(mitems, metricID) != sortedIDs(metrics.GetPodMetrics(), metricID) {
		t.Errorf("StreamPodSandboxMetrics: %d items, %v; ListPodSandboxMetrics: %d items, %v", len(mitems), err, len(metrics.GetPodMetrics()), listErr)
	}

	img := runtimeapi.NewImageServiceClient(e.conn)
	imgs, err := img.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	imgID := func(i *runtimeapi.Image) string { return i.Id }
	s6, err := img.StreamImages(ctx, &runtimeapi.StreamImagesRequest{})
	if items, _, err := drain(t, s6, err, imagesOf); err != nil ||
		len(items) != 2 || sortedIDs(items, imgID) != sortedIDs(imgs.Images, imgID) {
		t.Errorf("StreamImages: %v, %v; ListImages %v", items, err, imgs.Images)
	}
	s6, err = img.StreamImages(ctx, &runtimeapi.StreamImagesRequest{Filter: &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{Image: "busybox:stopsignal"}}})
	if items, _, err := drain(t, s6, err, imagesOf); err != nil ||
		len(items) != 1 || !strings.Contains(strings.Join(items[0].RepoTags, " "), "busybox:stopsignal") {
		t.Errorf("StreamImages of one image: %v, %v", items, err)
	}

	for _, id := range pods {
		e.stopRemove(id)
	}
	e.assertNoLeaks(pods...)
}

// Checkpoint and restore stay Unimplemented, saying why.
func TestCheckpointUnimplemented(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start()
	_, err := e.rt.CheckpointContainer(e.ctx(), &runtimeapi.CheckpointContainerRequest{ContainerId: "any", Location: "/tmp/x.tar"})
	if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "CRIU") || !strings.Contains(err.Error(), "vDSO") {
		t.Errorf("CheckpointContainer: %v, want Unimplemented saying why", err)
	}
	if _, err := e.rt.CheckpointPod(e.ctx(), &runtimeapi.CheckpointPodRequest{}); status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "CRIU") {
		t.Errorf("CheckpointPod: %v", err)
	}
}
