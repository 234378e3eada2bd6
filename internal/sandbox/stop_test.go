package sandbox

import (
	"context"
	"testing"
)

// Stopping a sandbox that holds nothing any more (the kubelet's
// RemovePodSandbox after its StopPodSandbox stops it again) writes nothing:
// with the store closed under it, the stop still succeeds.
func TestStopOfStoppedSandboxWritesNothing(t *testing.T) {
	dir := t.TempDir()
	rec := Record{ID: "ee05", Name: "p_ns_u_0", Handler: "runc", State: StateNotReady,
		CgroupParent: "/kubepods", CgroupsPath: "/kubepods/ee05"}
	st := storeWith(t, dir, rec)
	m := recoveredManager(t, dir, st)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := m.Stop(context.Background(), rec.ID); err != nil {
			t.Fatalf("stop %d of a stopped sandbox: %v", i+1, err)
		}
	}
}

// persisted tells a record as last written from one changed since,
// slices included.
func TestPersisted(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Record)
		want   bool
	}{
		{"unchanged", func(*Record) {}, true},
		{"state", func(r *Record) { r.State = StateNotReady }, false},
		{"network detached", func(r *Record) { r.NetworkAttached = false }, false},
		{"netns released", func(r *Record) { r.NetnsPath = "" }, false},
		{"infra deleted", func(r *Record) { r.InfraCreated = false }, false},
		{"an IP replaced", func(r *Record) { r.IPs = []string{"10.0.0.9"} }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sb := &Sandbox{rec: Record{ID: "ff06", State: StateReady, NetnsPath: "/run/x", NetworkAttached: true,
				InfraCreated: true, IPs: []string{"10.0.0.2"}}}
			if sb.persisted() {
				t.Fatal("persisted before any write")
			}
			sb.snapshot.Publish(&sb.rec)
			tt.change(&sb.rec)
			if got := sb.persisted(); got != tt.want {
				t.Errorf("persisted = %v, want %v", got, tt.want)
			}
		})
	}
}
