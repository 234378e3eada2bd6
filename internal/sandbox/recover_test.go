package sandbox

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/network"
	"github.com/huskrt/husk/internal/ociruntime"
	"github.com/huskrt/husk/internal/store"
)

// A record made before records kept the cgroup parent gets it at recovery
// from its infra's cgroups path, in either driver's syntax, and keeps it on
// disk; a parent already recorded stays as it is.
func TestRecoverFillsCgroupParent(t *testing.T) {
	tests := []struct {
		id, parent, cgroupsPath, want string
	}{
		{id: "aa01", cgroupsPath: "/kubepods/besteffort/podx/aa01", want: "/kubepods/besteffort/podx"},
		{id: "bb02", cgroupsPath: "kubepods-podx.slice:husk:bb02", want: "kubepods-podx.slice"},
		{id: "cc03", cgroupsPath: "/cc03", want: "/"},
		{id: "dd04", parent: "/kept", cgroupsPath: "/elsewhere/dd04", want: "/kept"},
	}
	var recs []Record
	for _, tt := range tests {
		recs = append(recs, Record{ID: tt.id, Name: "name-" + tt.id, Handler: "runc", State: StateNotReady,
			CgroupParent: tt.parent, CgroupsPath: tt.cgroupsPath})
	}
	dir := t.TempDir()
	st := storeWith(t, dir, recs...)
	m := recoveredManager(t, dir, st)

	onDisk := map[string]Record{}
	if err := st.List(store.Sandboxes, func(id string, b []byte) error {
		var r Record
		err := json.Unmarshal(b, &r)
		onDisk[id] = r
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		rec, _, err := m.Get(tt.id)
		if err != nil || rec.CgroupParent != tt.want || rec.State != StateNotReady {
			t.Errorf("%s after recovery: parent %q, state %s, %v; want %q, NOTREADY", tt.id, rec.CgroupParent, rec.State, err, tt.want)
		}
		if got := onDisk[tt.id].CgroupParent; got != tt.want {
			t.Errorf("%s on disk: parent %q, want %q", tt.id, got, tt.want)
		}
	}
}

// storeWith is a store in dir holding recs, each with a valid config,
// closed when the test ends.
func storeWith(t *testing.T, dir string, recs ...Record) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(dir, "husk.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg, err := proto.Marshal(&runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "ns", Uid: "u"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range recs {
		rec.Config = cfg
		if err := st.Create(store.Sandboxes, store.SandboxNames, rec.ID, rec.Name, &rec); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// recoveredManager is a sandbox manager over st and dir, recovered from
// what st holds; its runtime and infra binary are never run.
func recoveredManager(t *testing.T, dir string, st *store.Store) *Manager {
	t.Helper()
	net, err := network.New(network.Options{CacheDir: filepath.Join(dir, "cni"), NetnsDir: filepath.Join(dir, "netns")})
	if err != nil {
		t.Fatal(err)
	}
	rt := &ociruntime.Runtime{Handler: "runc", Root: filepath.Join(dir, "runc")}
	if err := os.MkdirAll(rt.Root, 0o700); err != nil {
		t.Fatal(err)
	}
	runtimes, err := ociruntime.NewHandlers("runc", rt)
	if err != nil {
		t.Fatal(err)
	}
	pause := filepath.Join(dir, "husk-pause")
	if err := os.WriteFile(pause, []byte("not run here"), 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := New(Options{StateDir: filepath.Join(dir, "state"), NetnsDir: filepath.Join(dir, "netns"), Store: st,
		Network: net, Runtimes: runtimes, PauseBinary: pause, CgroupDriver: "cgroupfs"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if err := m.Recover(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	return m
}
