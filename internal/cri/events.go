package cri

import (
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/lifecycle"
)

const (
	// eventBuffer is how many events a slow subscriber may fall behind
	// before it is dropped (the kubelet then relists, as with containerd).
	eventBuffer = 1024
	// eventQueue bounds the events waiting for their payload. Building one
	// takes microseconds and never waits, so a full queue means the
	// builder is stuck: subscribers are dropped (they relist) rather than
	// a lifecycle operation held.
	eventQueue = 4096
)

// podStatuses reads what an event carries: a sandbox's status with its
// containers' (RuntimeServer.podStatus), and the sandboxes there are.
type podStatuses interface {
	podStatus(id string, verbose bool) (*runtimeapi.PodSandboxStatusResponse, error)
	sandboxIDs() []string
}

// Events fans container and sandbox lifecycle events out to every
// GetContainerEvents stream, each with the pod's sandbox status and
// container statuses, which the kubelet's evented PLEG takes as the pod's
// state at the event's created_at.
//
// Emit only queues the event: the managers call it with an object's lock
// held. One goroutine takes the queue in order and builds each payload
// from the published snapshots, which the managers update before they
// emit, so a payload shows the state at its event or later, never earlier;
// created_at is taken before the snapshots are read.
type Events struct {
	mu    sync.Mutex
	subs  map[chan *runtimeapi.ContainerEventResponse]struct{}
	queue []queued
	wake  chan struct{}
	// missed counts events dropped unbuilt (no subscriber, or a full
	// queue); the builder then forgets the sandboxes that are gone.
	missed uint64
	source podStatuses

	// last is the last status built for each sandbox: the payload of its
	// DELETED event, sent when the sandbox is already gone (containerd
	// sends its last status; CRI-O sends no such event). Only the builder
	// goroutine touches it, and seen.
	last map[string]*runtimeapi.PodSandboxStatus
	seen uint64
}

// queued is an event waiting for its payload, or, with prime set, a new
// subscriber's request to remember every sandbox's status.
type queued struct {
	ev    lifecycle.Event
	prime bool
}

// NewEvents returns an event hub with no subscribers. It builds nothing
// until a RuntimeServer is made over it.
func NewEvents() *Events {
	return &Events{
		subs: map[chan *runtimeapi.ContainerEventResponse]struct{}{},
		wake: make(chan struct{}, 1),
		last: map[string]*runtimeapi.PodSandboxStatus{},
	}
}

// start gives the hub where statuses come from and starts its builder.
func (e *Events) start(src podStatuses) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.source != nil {
		return
	}
	e.source = src
	go e.build()
}

// Emit queues a lifecycle event of the sandbox and container managers; it
// never waits. With no subscriber there is nothing to build.
func (e *Events) Emit(ev lifecycle.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.subs) == 0 || e.source == nil {
		e.missed++
		return
	}
	e.enqueueLocked(queued{ev: ev})
}

func (e *Events) enqueueLocked(q queued) {
	if len(e.queue) >= eventQueue {
		e.missed++
		e.queue = nil
		for ch := range e.subs {
			delete(e.subs, ch)
			close(ch)
		}
		return
	}
	e.queue = append(e.queue, q)
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// build takes the queue in order, for good.
func (e *Events) build() {
	for range e.wake {
		for {
			e.mu.Lock()
			batch, missed := e.queue, e.missed
			e.queue = nil
			e.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			if missed != e.seen {
				e.forgetGone(batch)
				e.seen = missed
			}
			for _, q := range batch {
				if q.prime {
					e.remember()
					continue
				}
				e.publish(e.payload(q.ev))
			}
		}
	}
}

// payload is the CRI event with the pod's statuses; a sandbox already
// removed gets its last known status (NOTREADY: it was stopped to be
// removed) and no containers.
func (e *Events) payload(ev lifecycle.Event) *runtimeapi.ContainerEventResponse {
	out := &runtimeapi.ContainerEventResponse{ContainerId: ev.ContainerID, ContainerEventType: ev.Type, CreatedAt: time.Now().UnixNano()}
	resp, err := e.source.podStatus(ev.SandboxID, false)
	switch {
	case err == nil:
		out.PodSandboxStatus, out.ContainersStatuses = resp.Status, resp.ContainersStatuses
		e.last[ev.SandboxID] = resp.Status
	case errdefs.IsNotFound(err) && e.last[ev.SandboxID] != nil:
		st := proto.Clone(e.last[ev.SandboxID]).(*runtimeapi.PodSandboxStatus)
		st.State = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
		out.PodSandboxStatus = st
	}
	if ev.Type == runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT && ev.ContainerID == ev.SandboxID {
		delete(e.last, ev.SandboxID)
	}
	return out
}

// remember records every sandbox's status, for a new subscriber: a
// sandbox it sees no other event of before its removal still gets its
// last status in its DELETED event.
func (e *Events) remember() {
	for _, id := range e.source.sandboxIDs() {
		if resp, err := e.source.podStatus(id, false); err == nil {
			e.last[id] = resp.Status
		}
	}
}

// forgetGone drops the last status of sandboxes that are gone and whose
// DELETED event is not in batch: their event was missed.
func (e *Events) forgetGone(batch []queued) {
	keep := map[string]bool{}
	for _, id := range e.source.sandboxIDs() {
		keep[id] = true
	}
	for _, q := range batch {
		keep[q.ev.SandboxID] = true
	}
	for id := range e.last {
		if !keep[id] {
			delete(e.last, id)
		}
	}
}

// publish sends an event to every subscriber; one that cannot keep up is
// closed, never waited for. Subscribers share the message: nobody
// changes it once built.
func (e *Events) publish(ev *runtimeapi.ContainerEventResponse) {
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
	defer e.mu.Unlock()
	e.subs[ch] = struct{}{}
	if e.source != nil {
		e.enqueueLocked(queued{prime: true})
	}
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
