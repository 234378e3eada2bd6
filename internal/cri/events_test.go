package cri

import (
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/lifecycle"
)

// fakePods is a podStatuses over a map the test changes, as the managers
// publish snapshots; block, when set, holds every read until closed.
type fakePods struct {
	mu    sync.Mutex
	pods  map[string]runtimeapi.PodSandboxState
	ctrs  map[string][]string // sandbox → container IDs
	block chan struct{}
}

func newFakePods() *fakePods {
	return &fakePods{pods: map[string]runtimeapi.PodSandboxState{}, ctrs: map[string][]string{}}
}

func (f *fakePods) set(id string, st runtimeapi.PodSandboxState, ctrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pods[id], f.ctrs[id] = st, ctrs
}

func (f *fakePods) remove(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.pods, id)
	delete(f.ctrs, id)
}

func (f *fakePods) podStatus(id string, _ bool) (*runtimeapi.PodSandboxStatusResponse, error) {
	if f.block != nil {
		<-f.block
	}
	at := time.Now().UnixNano()
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.pods[id]
	if !ok {
		return nil, fmt.Errorf("pod sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	resp := &runtimeapi.PodSandboxStatusResponse{Timestamp: at, Status: &runtimeapi.PodSandboxStatus{
		Id: id, State: st, Metadata: &runtimeapi.PodSandboxMetadata{Name: "pod-" + id, Uid: "uid-" + id}}}
	for _, c := range f.ctrs[id] {
		resp.ContainersStatuses = append(resp.ContainersStatuses, &runtimeapi.ContainerStatus{Id: c})
	}
	return resp, nil
}

func (f *fakePods) sandboxIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for id := range f.pods {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

func recv(t *testing.T, ch chan *runtimeapi.ContainerEventResponse) *runtimeapi.ContainerEventResponse {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("subscriber dropped")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	return nil
}

func ev(ctr, sb string, typ runtimeapi.ContainerEventType) lifecycle.Event {
	return lifecycle.Event{ContainerID: ctr, SandboxID: sb, Type: typ}
}

// Every event carries the pod's statuses as they are when it is built,
// which is at or after the event; created_at never goes back.
func TestEventsCarryPodStatuses(t *testing.T) {
	pods := newFakePods()
	e := NewEvents()
	e.start(pods)
	ch := e.subscribe()
	defer e.unsubscribe(ch)

	pods.set("p1", runtimeapi.PodSandboxState_SANDBOX_READY)
	e.Emit(ev("p1", "p1", runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT))
	pods.set("p1", runtimeapi.PodSandboxState_SANDBOX_READY, "c1")
	e.Emit(ev("c1", "p1", runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT))

	first, second := recv(t, ch), recv(t, ch)
	if first.ContainerId != "p1" || first.PodSandboxStatus.GetMetadata().GetUid() != "uid-p1" {
		t.Errorf("first event = %v", first)
	}
	if second.ContainerId != "c1" || len(second.ContainersStatuses) != 1 || second.ContainersStatuses[0].Id != "c1" {
		t.Errorf("second event = %v, want c1 among the containers", second)
	}
	if first.CreatedAt == 0 || second.CreatedAt < first.CreatedAt {
		t.Errorf("created_at %d then %d", first.CreatedAt, second.CreatedAt)
	}
}

// A sandbox's DELETED event comes after the sandbox is gone: it carries
// the last status the hub saw, NOTREADY, whether that came from an
// earlier event or from the subscription (the sandbox existed before it).
func TestDeletedSandboxCarriesLastStatus(t *testing.T) {
	pods := newFakePods()
	pods.set("old", runtimeapi.PodSandboxState_SANDBOX_READY)
	e := NewEvents()
	e.start(pods)
	ch := e.subscribe()
	defer e.unsubscribe(ch)

	pods.set("new", runtimeapi.PodSandboxState_SANDBOX_READY)
	e.Emit(ev("new", "new", runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT))
	recv(t, ch)
	for _, id := range []string{"new", "old"} {
		pods.remove(id)
		e.Emit(ev(id, id, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT))
		got := recv(t, ch)
		if got.PodSandboxStatus.GetId() != id || got.PodSandboxStatus.GetState() != runtimeapi.PodSandboxState_SANDBOX_NOTREADY ||
			got.PodSandboxStatus.GetMetadata().GetUid() != "uid-"+id {
			t.Errorf("DELETED of %s carries %v", id, got.PodSandboxStatus)
		}
	}
	e.Emit(ev("new", "new", runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT))
	if got := recv(t, ch); got.PodSandboxStatus != nil {
		t.Errorf("an event after DELETED still carries %v: the last status was kept", got.PodSandboxStatus)
	}
}

// Emit never waits for the payload to be built, and a builder that cannot
// keep up drops the subscribers (they relist) instead of queueing without
// bound.
func TestEmitNeverBlocks(t *testing.T) {
	pods := newFakePods()
	pods.set("p", runtimeapi.PodSandboxState_SANDBOX_READY)
	pods.block = make(chan struct{})
	e := NewEvents()
	e.start(pods)
	ch := e.subscribe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 2*eventQueue; i++ {
			e.Emit(ev("c", "p", runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT))
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Emit blocked behind a builder that is stuck")
	}
	close(pods.block)
	for range ch { // closed once the queue overflowed
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.subs) != 0 || len(e.queue) > eventQueue {
		t.Errorf("%d subscribers, %d queued after an overflow", len(e.subs), len(e.queue))
	}
}

// Events emitted with nobody listening are not built; the statuses kept
// for sandboxes that went meanwhile are dropped.
func TestMissedEventsForgetGoneSandboxes(t *testing.T) {
	pods := newFakePods()
	e := NewEvents()
	e.start(pods)
	ch := e.subscribe()
	pods.set("gone", runtimeapi.PodSandboxState_SANDBOX_READY)
	e.Emit(ev("gone", "gone", runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT))
	recv(t, ch)
	e.unsubscribe(ch)

	pods.remove("gone")
	e.Emit(ev("gone", "gone", runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT)) // nobody hears it
	ch = e.subscribe()
	defer e.unsubscribe(ch)
	pods.set("p", runtimeapi.PodSandboxState_SANDBOX_READY)
	e.Emit(ev("p", "p", runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT))
	recv(t, ch)
	// The builder is idle now: last is its own again.
	if _, kept := e.last["gone"]; kept {
		t.Error("the status of a sandbox removed while nobody listened is kept")
	}
}

// Many managers emit at once; every event reaches the subscriber in the
// order each emitter emitted it (run with -race).
func TestConcurrentEmit(t *testing.T) {
	pods := newFakePods()
	e := NewEvents()
	e.start(pods)
	ch := e.subscribe()
	defer e.unsubscribe(ch)
	const emitters, each = 8, 100
	var wg sync.WaitGroup
	for g := 0; g < emitters; g++ {
		sb := fmt.Sprintf("p%d", g)
		pods.set(sb, runtimeapi.PodSandboxState_SANDBOX_READY)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				e.Emit(ev(fmt.Sprintf("%s-%03d", sb, i), sb, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT))
			}
		}()
	}
	wg.Wait()
	next := map[string]int{}
	for i := 0; i < emitters*each; i++ {
		got := recv(t, ch)
		sb := got.PodSandboxStatus.GetId()
		if want := fmt.Sprintf("%s-%03d", sb, next[sb]); got.ContainerId != want {
			t.Fatalf("event %s, want %s next", got.ContainerId, want)
		}
		next[sb]++
	}
}
