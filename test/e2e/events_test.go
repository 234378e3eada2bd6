package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// subscribe opens a GetContainerEvents stream; its events arrive on the
// channel until the stream ends.
func (e *env) subscribe() <-chan *runtimeapi.ContainerEventResponse {
	e.t.Helper()
	stream, err := e.rt.GetContainerEvents(e.ctx(), &runtimeapi.GetEventsRequest{})
	if err != nil {
		e.t.Fatal(err)
	}
	out := make(chan *runtimeapi.ContainerEventResponse, 1000)
	go func() {
		defer close(out)
		for {
			ev, err := stream.Recv()
			if err != nil {
				return
			}
			out <- ev
		}
	}()
	return out
}

// collect reads events until one of the given container and type
// arrives.
func collect(t *testing.T, events <-chan *runtimeapi.ContainerEventResponse, id string, typ runtimeapi.ContainerEventType, got *[]*runtimeapi.ContainerEventResponse) *runtimeapi.ContainerEventResponse {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("event stream ended before %s %s", id, typ)
			}
			*got = append(*got, ev)
			if ev.ContainerId == id && ev.ContainerEventType == typ {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %s %s within 20s; got %d events", id, typ, len(*got))
		}
	}
}

// stateRank orders container states along their one-way lifecycle.
var stateRank = map[runtimeapi.ContainerState]int{
	runtimeapi.ContainerState_CONTAINER_CREATED: 0, runtimeapi.ContainerState_CONTAINER_RUNNING: 1,
	runtimeapi.ContainerState_CONTAINER_EXITED: 2,
}

// eventRank is the least state a container is in once it had the event.
var eventRank = map[runtimeapi.ContainerEventType]int{
	runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT: 0, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT: 1,
	runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT: 2,
}

// checkPayload checks what the kubelet's evented PLEG relies on: the
// sandbox status with its metadata, and the pod's containers in a state at
// least as late as the event says; a deleted container is absent.
func checkPayload(t *testing.T, ev *runtimeapi.ContainerEventResponse, podID string, pod *runtimeapi.PodSandboxConfig) {
	t.Helper()
	name := fmt.Sprintf("%s %.12s", ev.ContainerEventType, ev.ContainerId)
	sb := ev.PodSandboxStatus
	if sb == nil || sb.Id != podID || sb.Metadata.GetUid() != pod.Metadata.Uid || sb.Metadata.GetName() != pod.Metadata.Name {
		t.Errorf("%s: pod_sandbox_status = %v", name, sb)
		return
	}
	if ev.ContainerId == podID {
		// A payload may be later than its event, never earlier: once
		// stopped, the sandbox stays NOTREADY.
		if ev.ContainerEventType >= runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT && sb.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
			t.Errorf("%s: sandbox state %s, want NOTREADY", name, sb.State)
		}
		return
	}
	var st *runtimeapi.ContainerStatus
	for _, c := range ev.ContainersStatuses {
		if c.Id == ev.ContainerId {
			st = c
		}
	}
	if ev.ContainerEventType == runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT {
		if st != nil {
			t.Errorf("%s: the deleted container is still among the statuses", name)
		}
		return
	}
	if st == nil {
		t.Errorf("%s: the container is not among the %d statuses", name, len(ev.ContainersStatuses))
		return
	}
	if stateRank[st.State] < eventRank[ev.ContainerEventType] {
		t.Errorf("%s: container state %s is older than the event", name, st.State)
	}
}

// GetContainerEvents events carry the pod's sandbox status and container
// statuses, as the kubelet's evented PLEG needs them; PodSandboxStatus
// carries the container statuses and the time they were read.
func TestEventPayloads(t *testing.T) {
	for _, handler := range []string{"runc", "crun"} {
		t.Run(handler, func(t *testing.T) {
			t.Parallel()
			e := containerEnv(t)
			events := e.subscribe()
			var got []*runtimeapi.ContainerEventResponse
			pod := e.podConfig("pleg-" + handler)
			podID := e.runPod(pod, handler)
			long := e.run(podID, pod, ctrConfig("long", "sleep", "3600"))
			short := e.run(podID, pod, ctrConfig("short", "sh", "-c", "exit 3"))
			stopped := collect(t, events, short, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, &got)

			// The exit is in the event that tells it, as ContainerStatus
			// reports it.
			var exited *runtimeapi.ContainerStatus
			for _, c := range stopped.ContainersStatuses {
				if c.Id == short {
					exited = c
				}
			}
			st, err := e.rt.ContainerStatus(e.ctx(), &runtimeapi.ContainerStatusRequest{ContainerId: short})
			if err != nil || exited == nil || exited.ExitCode != 3 || !proto.Equal(exited, st.Status) {
				t.Errorf("STOPPED event's status of the exited container = %v\nContainerStatus = %v, %v", exited, st.GetStatus(), err)
			}

			before := time.Now().UnixNano()
			resp, err := e.rt.PodSandboxStatus(e.ctx(), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Timestamp < before || resp.Timestamp > time.Now().UnixNano() {
				t.Errorf("PodSandboxStatus timestamp %d is not the time of the call (%d..now)", resp.Timestamp, before)
			}
			var ids []string
			for _, c := range resp.ContainersStatuses {
				ids = append(ids, c.Id+"="+c.State.String())
			}
			if want := []string{long + "=CONTAINER_RUNNING", short + "=CONTAINER_EXITED"}; strings.Join(ids, " ") != strings.Join(want, " ") {
				t.Errorf("PodSandboxStatus containers_statuses = %v, want %v", ids, want)
			}

			e.stopRemove(podID)
			collect(t, events, podID, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT, &got)
			var last int64
			var seen []string
			for _, ev := range got {
				checkPayload(t, ev, podID, pod)
				if ev.CreatedAt < last {
					t.Errorf("created_at went back: %d after %d", ev.CreatedAt, last)
				}
				last = ev.CreatedAt
				seen = append(seen, fmt.Sprintf("%.6s:%s", ev.ContainerId, strings.TrimSuffix(strings.TrimPrefix(ev.ContainerEventType.String(), "CONTAINER_"), "_EVENT")))
			}
			// Every event of both containers and of the pod, each
			// checked above.
			if len(got) != 12 {
				t.Errorf("%d events, want 12 (pod 4, each container 4): %v", len(got), seen)
			}
			e.assertNoLeaks(podID, long, short)
		})
	}
}
