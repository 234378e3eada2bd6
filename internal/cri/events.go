package cri

import (
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/lifecycle"
)

// eventBuffer is how many events a slow subscriber may fall behind before
// it is dropped (the kubelet then relists, as with containerd).
const eventBuffer = 1024

// Events fans container and sandbox lifecycle events out to every
// GetContainerEvents stream.
type Events struct {
	mu   sync.Mutex
	subs map[chan *runtimeapi.ContainerEventResponse]struct{}
}

// NewEvents returns an event hub with no subscribers.
func NewEvents() *Events {
	return &Events{subs: map[chan *runtimeapi.ContainerEventResponse]struct{}{}}
}

// Emit publishes a lifecycle event of the sandbox and container managers.
// The event names its objects only; the CRI payload is built here, where
// the statuses are, so that the pod_sandbox_status and containers_statuses
// evented PLEG wants (issue 13) are added in this one place.
func (e *Events) Emit(ev lifecycle.Event) {
	e.publish(&runtimeapi.ContainerEventResponse{ContainerId: ev.ContainerID, ContainerEventType: ev.Type})
}

// publish sends an event to every subscriber; one that cannot keep up is
// closed, never waited for.
func (e *Events) publish(ev *runtimeapi.ContainerEventResponse) {
	if ev.CreatedAt == 0 {
		ev.CreatedAt = time.Now().UnixNano()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for ch := range e.subs {
		select {
		case ch <- ev:
		default:
			delete(e.subs, ch)
			close(ch)
		}
	}
}

func (e *Events) subscribe() chan *runtimeapi.ContainerEventResponse {
	ch := make(chan *runtimeapi.ContainerEventResponse, eventBuffer)
	e.mu.Lock()
	e.subs[ch] = struct{}{}
	e.mu.Unlock()
	return ch
}

func (e *Events) unsubscribe(ch chan *runtimeapi.ContainerEventResponse) {
	e.mu.Lock()
	if _, ok := e.subs[ch]; ok {
		delete(e.subs, ch)
		close(ch)
	}
	e.mu.Unlock()
}

// GetContainerEvents streams lifecycle events until the client goes away.
func (s *RuntimeServer) GetContainerEvents(_ *runtimeapi.GetEventsRequest, stream runtimeapi.RuntimeService_GetContainerEventsServer) error {
	ch := s.opts.Events.subscribe()
	defer s.opts.Events.unsubscribe(ch)
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case ev, ok := <-ch:
			if !ok {
				return nil // fell behind: the kubelet reconnects and relists
			}
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
	}
}
