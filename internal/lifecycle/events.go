package lifecycle

import (
	"context"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Event is a lifecycle event of a container or a sandbox; a sandbox's
// event names the sandbox as its container, as the CRI does. It names the
// objects only: the listener builds what it sends from their status.
type Event struct {
	ContainerID string
	SandboxID   string
	Type        runtimeapi.ContainerEventType
}

// Events hears every lifecycle event (internal/cri's hub feeds
// GetContainerEvents). Emit must not block: managers call it with the
// object's lock held.
type Events interface {
	Emit(Event)
}

// Discard hears nothing, for managers given no Events.
var Discard Events = discard{}

type discard struct{}

func (discard) Emit(Event) {}

// cleanupTimeout bounds one cleanup: runtime deletes, CNI DEL, unmounts.
const cleanupTimeout = time.Minute

// FreshContext is for cleanup, which must run even when the request's
// context is spent (a kubelet that gave up must not leave half-released
// state), but bounded.
func FreshContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), cleanupTimeout)
}
