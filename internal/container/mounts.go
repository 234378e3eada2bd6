package container

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/oci"
)

// prepareMounts readies the host side of each CRI mount. Host paths that do
// not exist are made as directories, as containerd does: the kubelet asks
// for them (emptyDir, hostPath DirectoryOrCreate). A propagation the host's
// mount cannot give is refused.
func prepareMounts(mounts []*runtimeapi.Mount) error {
	for i, mnt := range mounts {
		if isImageMount(mnt) {
			continue // mounted by huskd, read-only (mountImages)
		}
		if _, err := os.Stat(mnt.GetHostPath()); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(mnt.GetHostPath(), 0o755); err != nil {
				return fmt.Errorf("mounts[%d]: host path %s: %w", i, mnt.GetHostPath(), err)
			}
		}
		if err := checkPropagation(mnt); err != nil {
			return fmt.Errorf("mounts[%d]: %w", i, err)
		}
	}
	return nil
}

// checkPropagation refuses a propagation the host's mount of the source
// cannot give (propagationError says which).
func checkPropagation(m *runtimeapi.Mount) error {
	want := m.GetPropagation()
	if want != runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL && want != runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER {
		return nil
	}
	info, err := mountinfo.GetMounts(mountinfo.ParentsFilter(m.GetHostPath()))
	if err != nil || len(info) == 0 {
		return fmt.Errorf("host path %s: find its mount: %v", m.GetHostPath(), err)
	}
	mnt := info[0]
	for _, i := range info {
		if len(i.Mountpoint) > len(mnt.Mountpoint) {
			mnt = i
		}
	}
	return propagationError(want, m.GetHostPath(), mnt)
}

// propagationError says why the host's mount mnt of hostPath cannot give
// the propagation wanted: bidirectional needs a shared mount,
// host-to-container a shared or slave one (otherwise nothing would ever
// propagate, silently).
func propagationError(want runtimeapi.MountPropagation, hostPath string, mnt *mountinfo.Info) error {
	shared := strings.Contains(mnt.Optional, "shared:")
	slave := strings.Contains(mnt.Optional, "master:")
	if want == runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL && !shared {
		return fmt.Errorf("host path %s is on mount %s, which is not shared (bidirectional propagation needs it): %w", hostPath, mnt.Mountpoint, errdefs.ErrInvalidArgument)
	}
	if !shared && !slave {
		return fmt.Errorf("host path %s is on mount %s, which is neither shared nor slave (host-to-container propagation needs one): %w", hostPath, mnt.Mountpoint, errdefs.ErrInvalidArgument)
	}
	return nil
}

// volumeViews stages the views CRI mounts need (viewsNeeded) under dir.
// It returns the staged path of each such mount by index. The runtime's
// bind mounts are clones, so the views go once it created the container
// (dropVolumeViews); until then they stay, across a restart of huskd too.
func volumeViews(dir string, mounts []*runtimeapi.Mount, userns *idmap, sb *runtimeapi.PodSandboxConfig, runtimeRRO bool) (map[int]string, error) {
	views, index, err := viewsNeeded(mounts, userns, sb, runtimeRRO)
	if err != nil {
		return nil, err
	}
	if len(views) == 0 {
		return nil, nil
	}
	staged, _, err := stageViews(viewsDir(dir), views)
	if err != nil {
		return nil, err
	}
	out := map[int]string{}
	for j, i := range index {
		out[i] = staged[j]
	}
	return out, nil
}

// viewsDir is where the volume views of the container whose root dir is
// dir are staged.
func viewsDir(dir string) string { return filepath.Join(dir, "volume-views") }

// dropVolumeViews detaches the staged volume views of the container whose
// root dir is dir, once the runtime has made its clones of them.
func dropVolumeViews(dir string) error {
	views := viewsDir(dir)
	if _, err := os.Stat(views); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := unmountBelow(views); err != nil {
		return err
	}
	return os.RemoveAll(views)
}

// viewsNeeded lists the mounts that are bind mounted from a view, with
// their indexes: idmapped ones for a pod with a user namespace (the
// kubelet gives them the pod's mappings; other mappings are refused),
// recursively read-only ones where the runtime has no "rro". Image volumes
// need none: their mounts are huskd's own.
func viewsNeeded(mounts []*runtimeapi.Mount, userns *idmap, sb *runtimeapi.PodSandboxConfig, runtimeRRO bool) ([]view, []int, error) {
	uids, gids, _ := oci.PodIDMappings(sb)
	var views []view
	var index []int
	for i, m := range mounts {
		var v view
		if len(m.GetUidMappings()) > 0 || len(m.GetGidMappings()) > 0 {
			if userns == nil || !sameMappings(m.GetUidMappings(), uids) || !sameMappings(m.GetGidMappings(), gids) {
				return nil, nil, fmt.Errorf("mounts[%d]: ID mappings that are not the pod's user namespace: %w", i, errdefs.ErrInvalidArgument)
			}
			v.userns = userns.nsPath
		}
		if isImageMount(m) {
			continue // idmapped and read-only already (mountImages)
		}
		v.rro = m.GetRecursiveReadOnly() && !runtimeRRO
		if v.userns == "" && !v.rro {
			continue
		}
		v.src = m.GetHostPath()
		views = append(views, v)
		index = append(index, i)
	}
	return views, index, nil
}

func sameMappings(a []*runtimeapi.IDMapping, b []specs.LinuxIDMapping) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].GetContainerId() != b[i].ContainerID || a[i].GetHostId() != b[i].HostID || a[i].GetLength() != b[i].Size {
			return false
		}
	}
	return true
}

// withSources adds the sources of more mounts, by index, to a map that may
// be nil.
func withSources(sources, more map[int]string) map[int]string {
	if len(more) == 0 {
		return sources
	}
	if sources == nil {
		sources = map[int]string{}
	}
	maps.Copy(sources, more)
	return sources
}
