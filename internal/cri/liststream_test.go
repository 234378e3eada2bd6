package cri

import (
	"fmt"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Items go out in order, each once, in messages of at most
// streamChunkBytes unless one item alone is larger; none, no message.
func TestSendChunks(t *testing.T) {
	big := map[string]string{"a": string(make([]byte, streamChunkBytes/3))}
	var items []*runtimeapi.Container
	for i := 0; i < 7; i++ {
		items = append(items, &runtimeapi.Container{Id: fmt.Sprint(i), Annotations: big})
	}
	items = append(items, &runtimeapi.Container{Id: "huge", Annotations: map[string]string{"a": string(make([]byte, 2*streamChunkBytes))}})
	var sizes []int
	var ids []string
	err := sendChunks(items, func(chunk []*runtimeapi.Container) error {
		sizes = append(sizes, len(chunk))
		for _, c := range chunk {
			ids = append(ids, c.Id)
		}
		return nil
	})
	if err != nil || fmt.Sprint(sizes) != "[2 2 2 1 1]" || len(ids) != len(items) {
		t.Errorf("chunks of %v (%v), err %v; want [2 2 2 1 1] with every item once", sizes, ids, err)
	}
	calls := 0
	if err := sendChunks([]*runtimeapi.Container(nil), func([]*runtimeapi.Container) error { calls++; return nil }); err != nil || calls != 0 {
		t.Errorf("no items: %d messages, %v", calls, err)
	}
}
