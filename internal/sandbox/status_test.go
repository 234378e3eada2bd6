package sandbox

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/lifecycle"
)

// ListEncoded is List, encoded: the same items in the same order for each
// filter; an item is encoded again once its sandbox's record changes, and
// only then.
func TestListEncoded(t *testing.T) {
	m := &Manager{index: lifecycle.NewIndex[*Sandbox]("pod sandbox")}
	var sbs []*Sandbox
	for i := range 4 {
		id := fmt.Sprintf("%064x", i+1)
		sb := &Sandbox{config: &runtimeapi.PodSandboxConfig{
			Metadata: &runtimeapi.PodSandboxMetadata{Name: fmt.Sprintf("pod-%d", i), Namespace: "default", Uid: fmt.Sprint(i)},
			Labels:   map[string]string{"app": fmt.Sprint(i % 2)}, Annotations: map[string]string{"seen": "now"},
		}, rec: Record{ID: id, Name: "name-" + id, State: StateReady, Handler: "crun", CreatedAt: int64(10 - i)}}
		sb.snapshot.Publish(&sb.rec)
		m.index.Add(id, sb.rec.Name, sb)
		sbs = append(sbs, sb)
	}
	filters := []*runtimeapi.PodSandboxFilter{
		nil,
		{Id: fmt.Sprintf("%064x", 2)[:50]},
		{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY}},
		{LabelSelector: map[string]string{"app": "1"}},
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
				var item runtimeapi.PodSandbox
				if err := proto.Unmarshal(b, &item); err != nil || !proto.Equal(&item, want[i]) {
					t.Errorf("%s: filter %v: item %d = %v (%v), want %v", when, f, i, &item, err, want[i])
				}
			}
		}
	}
	check("first")
	first, _ := m.ListEncoded(nil)
	sbs[0].rec.State = StateNotReady
	sbs[0].snapshot.Publish(&sbs[0].rec)
	check("after a stop")
	after, _ := m.ListEncoded(nil)
	// Oldest first: sbs[0] was made last.
	if &after[3][0] == &first[3][0] || &after[0][0] != &first[0][0] {
		t.Error("want the changed sandbox encoded again, the others kept")
	}
}
