package ociruntime

import (
	"fmt"
	"sort"

	"github.com/containerd/errdefs"
)

// Handlers is the runtime of each configured RuntimeClass handler; the
// empty handler is the default one. It is built once and never changes.
type Handlers struct {
	byName map[string]*Runtime
	def    string
}

// NewHandlers returns the table of runtimes (each serving its Handler);
// the default handler must be one of them.
func NewHandlers(def string, runtimes ...*Runtime) (*Handlers, error) {
	h := &Handlers{byName: map[string]*Runtime{}, def: def}
	for _, r := range runtimes {
		h.byName[r.Handler] = r
	}
	if _, ok := h.byName[def]; !ok {
		return nil, fmt.Errorf("default runtime handler %q is not configured", def)
	}
	return h, nil
}

// Get resolves a handler name ("" is the default); an unknown one is
// InvalidArgument. The runtime's Handler field is the resolved name.
func (h *Handlers) Get(handler string) (*Runtime, error) {
	if handler == "" {
		handler = h.def
	}
	r, ok := h.byName[handler]
	if !ok {
		return nil, fmt.Errorf("runtime handler %q is not configured: %w", handler, errdefs.ErrInvalidArgument)
	}
	return r, nil
}

// Default is the name of the default handler.
func (h *Handlers) Default() string { return h.def }

// Names lists the configured handler names, sorted.
func (h *Handlers) Names() []string {
	out := make([]string, 0, len(h.byName))
	for n := range h.byName {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// All returns the runtimes in the order of Names.
func (h *Handlers) All() []*Runtime {
	out := make([]*Runtime, 0, len(h.byName))
	for _, n := range h.Names() {
		out = append(out, h.byName[n])
	}
	return out
}
