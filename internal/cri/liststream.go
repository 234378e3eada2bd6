package cri

import (
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The Stream* calls (CRIListStreaming, alpha in kubelet 1.36) return what
// their List* counterpart returns, in messages of at least one item each,
// so that a node with many pods never meets gRPC's message size limit.
// Each calls the unary handler, or for pods and containers the same
// listing of encoded items (encoded.go), which keeps one place for
// filtering and validation: what makes the List* calls better (the stats
// and metrics among them) reaches the streams too.

// streamChunkBytes bounds the items of one message: far below the 4 MiB
// gRPC clients accept by default (the kubelet accepts 16 MiB). CRI-O counts
// items (3000 a message) instead; a byte budget holds whatever the size of
// the labels and annotations.
const streamChunkBytes = 1 << 20

// sendChunks sends items in order, in messages of at least one item and
// at most streamChunkBytes of items unless one item alone is larger. No
// items, no message: the stream just ends.
func sendChunks[T proto.Message](items []T, send func([]T) error) error {
	start, size := 0, 0
	for i, it := range items {
		n := proto.Size(it)
		if i > start && size+n > streamChunkBytes {
			if err := send(items[start:i]); err != nil {
				return err
			}
			start, size = i, 0
		}
		size += n
	}
	if start < len(items) {
		return send(items[start:])
	}
	return nil
}

func (s *RuntimeServer) StreamPodSandboxes(req *runtimeapi.StreamPodSandboxesRequest, stream runtimeapi.RuntimeService_StreamPodSandboxesServer) error {
	items, err := s.listPodSandboxes(req.GetFilter())
	if err != nil {
		return toStatus(err)
	}
	return encodedChunks(items, func(chunk [][]byte) error {
		return stream.Send(withItems(&runtimeapi.StreamPodSandboxesResponse{}, "pod_sandboxes", chunk))
	})
}

func (s *RuntimeServer) StreamContainers(req *runtimeapi.StreamContainersRequest, stream runtimeapi.RuntimeService_StreamContainersServer) error {
	items, err := s.listContainers(req.GetFilter())
	if err != nil {
		return toStatus(err)
	}
	return encodedChunks(items, func(chunk [][]byte) error {
		return stream.Send(withItems(&runtimeapi.StreamContainersResponse{}, "containers", chunk))
	})
}

func (s *RuntimeServer) StreamContainerStats(req *runtimeapi.StreamContainerStatsRequest, stream runtimeapi.RuntimeService_StreamContainerStatsServer) error {
	resp, err := s.ListContainerStats(stream.Context(), &runtimeapi.ListContainerStatsRequest{Filter: req.GetFilter()})
	if err != nil {
		return err
	}
	return sendChunks(resp.GetStats(), func(items []*runtimeapi.ContainerStats) error {
		return stream.Send(&runtimeapi.StreamContainerStatsResponse{ContainerStats: items})
	})
}

func (s *RuntimeServer) StreamPodSandboxStats(req *runtimeapi.StreamPodSandboxStatsRequest, stream runtimeapi.RuntimeService_StreamPodSandboxStatsServer) error {
	resp, err := s.ListPodSandboxStats(stream.Context(), &runtimeapi.ListPodSandboxStatsRequest{Filter: req.GetFilter()})
	if err != nil {
		return err
	}
	return sendChunks(resp.GetStats(), func(items []*runtimeapi.PodSandboxStats) error {
		return stream.Send(&runtimeapi.StreamPodSandboxStatsResponse{PodSandboxStats: items})
	})
}

// StreamPodSandboxMetrics is ListPodSandboxMetrics in chunks: it answers
// what that call answers.
func (s *RuntimeServer) StreamPodSandboxMetrics(_ *runtimeapi.StreamPodSandboxMetricsRequest, stream runtimeapi.RuntimeService_StreamPodSandboxMetricsServer) error {
	resp, err := s.ListPodSandboxMetrics(stream.Context(), &runtimeapi.ListPodSandboxMetricsRequest{})
	if err != nil {
		return err
	}
	return sendChunks(resp.GetPodMetrics(), func(items []*runtimeapi.PodSandboxMetrics) error {
		return stream.Send(&runtimeapi.StreamPodSandboxMetricsResponse{PodSandboxMetrics: items})
	})
}

func (s *ImageServer) StreamImages(req *runtimeapi.StreamImagesRequest, stream runtimeapi.ImageService_StreamImagesServer) error {
	resp, err := s.ListImages(stream.Context(), &runtimeapi.ListImagesRequest{Filter: req.GetFilter()})
	if err != nil {
		return err
	}
	return sendChunks(resp.GetImages(), func(items []*runtimeapi.Image) error {
		return stream.Send(&runtimeapi.StreamImagesResponse{Images: items})
	})
}
