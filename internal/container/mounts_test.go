package container

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestPropagationError(t *testing.T) {
	const (
		bidi = runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL
		h2c  = runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER
	)
	tests := []struct {
		want     runtimeapi.MountPropagation
		optional string // the mount's optional fields in mountinfo
		refused  string // "" = allowed; else a word of the error
	}{
		{bidi, "shared:1", ""},
		{bidi, "shared:1 master:2", ""},
		{bidi, "master:2", "not shared"},
		{bidi, "", "not shared"},
		{h2c, "shared:1", ""},
		{h2c, "master:2", ""},
		{h2c, "", "neither shared nor slave"},
		{h2c, "unbindable", "neither shared nor slave"},
	}
	for _, tt := range tests {
		err := propagationError(tt.want, "/srv/data", &mountinfo.Info{Mountpoint: "/srv", Optional: tt.optional})
		switch {
		case tt.refused == "" && err != nil:
			t.Errorf("%s on a mount with %q: refused: %v", tt.want, tt.optional, err)
		case tt.refused != "" && (!errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tt.refused) || !strings.Contains(err.Error(), "/srv")):
			t.Errorf("%s on a mount with %q: err = %v, want InvalidArgument naming the mount and %q", tt.want, tt.optional, err, tt.refused)
		}
	}
}

func TestViewsNeeded(t *testing.T) {
	podMap := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 100000, Length: 65536}}
	otherMap := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 200000, Length: 65536}}
	podUserns := &runtimeapi.PodSandboxConfig{Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{
			Mode: runtimeapi.NamespaceMode_POD, Uids: podMap, Gids: podMap,
		}},
	}}}
	ns := &idmap{nsPath: "/proc/1/ns/user", rootUID: 100000, rootGID: 100000}
	plain := &runtimeapi.Mount{HostPath: "/a", ContainerPath: "/a"}
	rro := &runtimeapi.Mount{HostPath: "/b", ContainerPath: "/b", Readonly: true, RecursiveReadOnly: true}
	mapped := &runtimeapi.Mount{HostPath: "/c", ContainerPath: "/c", UidMappings: podMap, GidMappings: podMap}
	mappedOther := &runtimeapi.Mount{HostPath: "/d", ContainerPath: "/d", UidMappings: otherMap, GidMappings: otherMap}

	tests := []struct {
		name       string
		mounts     []*runtimeapi.Mount
		userns     *idmap
		sb         *runtimeapi.PodSandboxConfig
		runtimeRRO bool
		want       []view
		wantIndex  []int
		refused    bool
	}{
		{name: "plain mounts need none", mounts: []*runtimeapi.Mount{plain, plain}},
		{name: "rro staged when the runtime has none", mounts: []*runtimeapi.Mount{plain, rro},
			want: []view{{src: "/b", rro: true}}, wantIndex: []int{1}},
		{name: "rro left to the runtime", mounts: []*runtimeapi.Mount{rro}, runtimeRRO: true},
		{name: "the pod's mappings are idmapped", mounts: []*runtimeapi.Mount{plain, mapped, rro}, userns: ns, sb: podUserns,
			want: []view{{src: "/c", userns: ns.nsPath}, {src: "/b", rro: true}}, wantIndex: []int{1, 2}},
		{name: "mappings without a pod user namespace", mounts: []*runtimeapi.Mount{mapped}, refused: true},
		{name: "mappings other than the pod's", mounts: []*runtimeapi.Mount{mappedOther}, userns: ns, sb: podUserns, refused: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			views, index, err := viewsNeeded(tt.mounts, tt.userns, tt.sb, tt.runtimeRRO)
			if tt.refused {
				if !errdefs.IsInvalidArgument(err) {
					t.Fatalf("err = %v, want InvalidArgument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(views) != len(tt.want) || len(index) != len(tt.wantIndex) {
				t.Fatalf("views %+v at %v, want %+v at %v", views, index, tt.want, tt.wantIndex)
			}
			for i := range views {
				if views[i] != tt.want[i] || index[i] != tt.wantIndex[i] {
					t.Errorf("view %d = %+v at %d, want %+v at %d", i, views[i], index[i], tt.want[i], tt.wantIndex[i])
				}
			}
		})
	}
}

// A host path that does not exist is made as a directory (emptyDir,
// hostPath DirectoryOrCreate); one that exists is left as it is.
func TestPrepareMountsMakesHostPaths(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "a", "b")
	err := prepareMounts([]*runtimeapi.Mount{{HostPath: file, ContainerPath: "/f"}, {HostPath: missing, ContainerPath: "/d"}})
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(missing); err != nil || !fi.IsDir() {
		t.Errorf("missing host path not made as a directory: %v", err)
	}
	if fi, err := os.Stat(file); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("existing host file changed: %v", err)
	}
}
