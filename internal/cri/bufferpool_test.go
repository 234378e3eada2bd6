package cri

import (
	"fmt"
	"testing"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestBufferPoolTiers checks that a list answer's buffer is at most twice
// its size, where gRPC's default pool hands out (and clears) 1 MiB.
func TestBufferPoolTiers(t *testing.T) {
	pool, err := mem.NewBinaryTieredBufferPool(bufferPoolExponents...)
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{100, 5000, 40_000, 90_000, 200_000, 600_000} {
		buf := pool.Get(size)
		if len(*buf) != size || cap(*buf) > 2*size && cap(*buf) > 256 {
			t.Errorf("Get(%d): len %d cap %d, want len %d and cap <= %d", size, len(*buf), cap(*buf), size, 2*size)
		}
		pool.Put(buf)
	}
}

// TestAnswersEncodedIntoThePool: what the server sends is encoded by the
// proto codec, which takes its buffer from gRPC's default pool, not the
// server's option; BufferPool must make its pool the default for a
// 110-pod list to be encoded into a buffer of about its size.
func TestAnswersEncodedIntoThePool(t *testing.T) {
	_ = BufferPool()
	resp := &runtimeapi.ListContainersResponse{}
	for i := 0; i < 110; i++ {
		resp.Containers = append(resp.Containers, &runtimeapi.Container{
			Id: fmt.Sprintf("%064d", i), PodSandboxId: fmt.Sprintf("%064d", i+1000),
			Metadata:    &runtimeapi.ContainerMetadata{Name: "app"},
			Image:       &runtimeapi.ImageSpec{Image: "docker.io/library/busybox:1"},
			ImageRef:    "sha256:" + fmt.Sprintf("%064d", 7),
			Labels:      map[string]string{"io.kubernetes.pod.name": fmt.Sprintf("pod-%d", i), "io.kubernetes.pod.namespace": "default"},
			Annotations: map[string]string{"io.kubernetes.container.hash": "1234", "io.kubernetes.container.terminationMessagePath": "/dev/termination-log"},
		})
	}
	size := proto.Size(resp)
	data, err := encoding.GetCodecV2("proto").Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	defer data.Free()
	if len(data) != 1 {
		t.Fatalf("encoded into %d buffers, want 1", len(data))
	}
	if b := data[0].ReadOnlyData(); len(b) != size || cap(b) > 2*size {
		t.Errorf("a %d-byte answer was encoded into a buffer of cap %d: not the server's pool", size, cap(b))
	}
}
