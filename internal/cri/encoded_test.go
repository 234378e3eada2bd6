package cri

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// A response made of encoded items reads, on the client's side, as the
// response with the items set, in their order; no items, an empty one.
func TestWithItems(t *testing.T) {
	items := []*runtimeapi.Container{
		{Id: "a", PodSandboxId: "p", Labels: map[string]string{"app": "web"}, Annotations: map[string]string{"x": "1"}, CreatedAt: 1},
		{Id: "b", State: runtimeapi.ContainerState_CONTAINER_RUNNING, Metadata: &runtimeapi.ContainerMetadata{Name: "n", Attempt: 2}},
	}
	for n := range len(items) + 1 {
		var encoded [][]byte
		for _, it := range items[:n] {
			b, err := proto.Marshal(it)
			if err != nil {
				t.Fatal(err)
			}
			encoded = append(encoded, b)
		}
		wire, err := proto.Marshal(withItems(&runtimeapi.ListContainersResponse{}, "containers", encoded))
		if err != nil {
			t.Fatal(err)
		}
		var got runtimeapi.ListContainersResponse
		if err := proto.Unmarshal(wire, &got); err != nil {
			t.Fatal(err)
		}
		if want := (&runtimeapi.ListContainersResponse{Containers: items[:n]}); !proto.Equal(&got, want) {
			t.Errorf("%d items: decoded %v, want %v", n, &got, want)
		}
	}
}

// Encoded items go out as sendChunks sends messages: in order, each once,
// at most streamChunkBytes a message unless one item alone is larger.
func TestEncodedChunks(t *testing.T) {
	var items [][]byte
	for range 7 {
		items = append(items, make([]byte, streamChunkBytes/3))
	}
	items = append(items, make([]byte, 2*streamChunkBytes))
	var sizes []int
	total := 0
	err := encodedChunks(items, func(chunk [][]byte) error {
		sizes = append(sizes, len(chunk))
		total += len(chunk)
		return nil
	})
	if err != nil || fmt.Sprint(sizes) != "[3 3 1 1]" || total != len(items) {
		t.Errorf("chunks of %v, err %v; want [3 3 1 1]", sizes, err)
	}
	calls := 0
	if err := encodedChunks(nil, func([][]byte) error { calls++; return nil }); err != nil || calls != 0 {
		t.Errorf("no items: %d messages, %v", calls, err)
	}
}
