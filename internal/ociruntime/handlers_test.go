package ociruntime

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestHandlers(t *testing.T) {
	runc, crun := &Runtime{Handler: "runc"}, &Runtime{Handler: "crun"}
	if _, err := NewHandlers("kata", runc, crun); err == nil || !strings.Contains(err.Error(), "kata") {
		t.Errorf("default not among the runtimes: %v", err)
	}
	h, err := NewHandlers("runc", runc, crun)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		handler string
		want    *Runtime
	}{{"", runc}, {"runc", runc}, {"crun", crun}} {
		if got, err := h.Get(tt.handler); err != nil || got != tt.want {
			t.Errorf("Get(%q) = %v, %v; want %s", tt.handler, got, err, tt.want.Handler)
		}
	}
	if _, err := h.Get("kata"); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), `"kata"`) {
		t.Errorf("Get(kata) = %v; want InvalidArgument naming it", err)
	}
	if got := strings.Join(h.Names(), ","); got != "crun,runc" {
		t.Errorf("Names = %s", got)
	}
	if all := h.All(); len(all) != 2 || all[0] != crun || all[1] != runc {
		t.Errorf("All = %v", all)
	}
}
