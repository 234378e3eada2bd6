package container

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/lifecycle"
)

// kubeletConfig is a container config with the labels and annotations the
// kubelet gives every container.
func kubeletConfig(i int) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
		Image:    &runtimeapi.ImageSpec{Image: "docker.io/library/busybox:1.36"},
		Labels: map[string]string{"io.kubernetes.container.name": "app", "io.kubernetes.pod.name": fmt.Sprintf("pod-%d", i),
			"io.kubernetes.pod.namespace": "default", "io.kubernetes.pod.uid": fmt.Sprintf("%08d-0000-0000-0000-000000000000", i)},
		Annotations: map[string]string{"io.kubernetes.container.hash": "abcdef12", "io.kubernetes.container.restartCount": "0",
			"io.kubernetes.container.terminationMessagePath":   "/dev/termination-log",
			"io.kubernetes.container.terminationMessagePolicy": "File", "io.kubernetes.pod.terminationGracePeriod": "30"},
	}
}

// listManager is a manager of n running containers, one a pod, made in
// order.
func listManager(n int) *Manager {
	m := &Manager{index: lifecycle.NewIndex[*Container]("container")}
	for i := range n {
		id := fmt.Sprintf("%064x", i+1)
		c := &Container{config: kubeletConfig(i), rec: Record{ID: id, Name: "name-" + id, SandboxID: fmt.Sprintf("%064x", i+1000),
			State: StateRunning, ImageID: "sha256:" + fmt.Sprintf("%064x", 7), ImageName: "docker.io/library/busybox:1.36",
			CreatedAt: time.Now().UnixNano() + int64(i)}}
		c.snapshot.Publish(&c.rec)
		m.index.Add(id, c.rec.Name, c)
	}
	return m
}

// ListEncoded is List, encoded: the same items in the same order for each
// filter; an item is encoded again once its container's record changes,
// and only then.
func TestListEncoded(t *testing.T) {
	m := listManager(5)
	c2, _ := m.index.Get(fmt.Sprintf("%064x", 2))
	filters := []*runtimeapi.ContainerFilter{
		nil,
		{Id: fmt.Sprintf("%064x", 3)[:60]},
		{State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_EXITED}},
		{LabelSelector: map[string]string{"io.kubernetes.pod.name": "pod-1"}},
		{PodSandboxId: fmt.Sprintf("%064x", 1004)},
	}
	check := func(when string) {
		t.Helper()
		for _, f := range filters {
			want := m.List(f)
			got, err := m.ListEncoded(f)
			if err != nil || len(got) != len(want) {
				t.Fatalf("%s: filter %v: %d encoded items (%v), want %d", when, f, len(got), err, len(want))
			}
			for i, b := range got {
				var item runtimeapi.Container
				if err := proto.Unmarshal(b, &item); err != nil || !proto.Equal(&item, want[i]) {
					t.Errorf("%s: filter %v: item %d = %v (%v), want %v", when, f, i, &item, err, want[i])
				}
			}
		}
	}
	check("first")
	first, _ := m.ListEncoded(nil)
	again, _ := m.ListEncoded(nil)
	if &first[1][0] != &again[1][0] {
		t.Error("an unchanged container was encoded again")
	}
	c2.rec.State, c2.rec.ExitCode = StateExited, 1
	c2.snapshot.Publish(&c2.rec)
	check("after an exit")
	after, _ := m.ListEncoded(nil)
	if &after[1][0] == &first[1][0] || &after[0][0] != &first[0][0] {
		t.Error("want the changed container encoded again, the others kept")
	}
}

// The relist of a full node: List and the gRPC codec's encoding against
// the items kept encoded (go test -bench List ./internal/container).
func BenchmarkListAndMarshal110(b *testing.B) {
	m := listManager(110)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := proto.Marshal(&runtimeapi.ListContainersResponse{Containers: m.List(nil)}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkListEncoded110(b *testing.B) {
	m := listManager(110)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.ListEncoded(nil); err != nil {
			b.Fatal(err)
		}
	}
}
