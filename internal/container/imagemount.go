package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/image"
)

// ImageMount is an image volume of a container (a Mount.image), as its
// record keeps it.
type ImageMount struct {
	// Index is the mount's index in the config's mounts.
	Index int `json:"index"`
	// ImageID is the image mounted; Layers its layers (diff IDs), which
	// the container holds in the image store, with its rootfs's, until
	// it is removed.
	ImageID string   `json:"imageId"`
	Layers  []string `json:"layers"`
	// Path is the read-only mount on the host the runtime binds in.
	Path string `json:"path"`
}

// isImageMount says whether a CRI mount is an image volume: the kubelet
// pulled the image and leaves host_path empty.
func isImageMount(m *runtimeapi.Mount) bool { return m.GetImage().GetImage() != "" }

// imageMountProblem says what is wrong with an image mount, and in which
// field; "" when nothing is. Like containerd, a writable image mount is
// refused rather than quietly made read-only.
func imageMountProblem(m *runtimeapi.Mount) (field, why string) {
	sub := m.GetImageSubPath()
	switch {
	case m.GetHostPath() != "":
		return "host_path", "must be empty for an image mount (image.image is set)"
	case !m.GetReadonly():
		return "readonly", "must be set: an image mount is read-only"
	case sub != "" && (!filepath.IsLocal(sub) || strings.ContainsRune(sub, 0)):
		return "image_sub_path", fmt.Sprintf("%q leaves the image", sub)
	}
	return "", ""
}

// volumeImages resolves the image of each image volume, by mount index.
// The kubelet pulls them before CreateContainer: one that is not in the
// store is NotFound.
func (m *Manager) volumeImages(mounts []*runtimeapi.Mount) (map[int]*image.Image, error) {
	out := map[int]*image.Image{}
	for i, mnt := range mounts {
		if !isImageMount(mnt) {
			continue
		}
		img, err := m.opts.Images.Resolve(mnt.GetImage().GetImage())
		if err != nil {
			return nil, fmt.Errorf("mounts[%d].image %q: %w", i, mnt.GetImage().GetImage(), err)
		}
		out[i] = img
	}
	return out, nil
}

// mountImages mounts each image volume read-only under the container's
// dir, its layers held under the container's ID and kept in its record
// (for recovery to hold them again). It returns the mount of each by
// index, for the runtime to bind in.
func (m *Manager) mountImages(rec *Record, mounts []*runtimeapi.Mount, imgs map[int]*image.Image, userns *idmap) (map[int]string, error) {
	out := map[int]string{}
	for i, mnt := range mounts {
		img, ok := imgs[i]
		if !ok {
			continue
		}
		target := filepath.Join(m.rootDir(rec.ID), "image-mounts", strconv.Itoa(i))
		rec.ImageMounts = append(rec.ImageMounts, ImageMount{Index: i, ImageID: img.ID, Layers: img.Layers, Path: target})
		if err := m.opts.Images.HoldLayers(rec.ID, img.Layers); err != nil {
			return nil, fmt.Errorf("mounts[%d]: image %s: %w", i, img.ID, err)
		}
		if err := mountImage(target, m.opts.Images.LayerDirs(img), userns); err != nil {
			return nil, fmt.Errorf("mounts[%d]: mount image %s: %w", i, img.ID, err)
		}
		if sub := mnt.GetImageSubPath(); sub != "" {
			if err := narrowToSubPath(target, sub); err != nil {
				return nil, fmt.Errorf("mounts[%d].image_sub_path %q in image %s: %w", i, sub, mnt.GetImage().GetImage(), err)
			}
		}
		out[i] = target
	}
	return out, nil
}

// mountImage mounts an image's layers (lowest first) read-only at target:
// an overlay of them with no upper dir, or the one layer (or an empty dir
// for an image with none) bound read-only, as overlayfs without an upper
// dir wants two lower dirs on older kernels. In a pod with its own user
// namespace the layers are seen through idmapped mounts, as in its rootfs.
func mountImage(target string, layers []string, userns *idmap) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	ns := ""
	if userns != nil {
		ns = userns.nsPath
	}
	if len(layers) <= 1 {
		src := target
		if len(layers) == 1 {
			src = layers[0]
		}
		return mountView(target, view{src: src, userns: ns, rro: true})
	}
	if userns != nil {
		views := make([]view, len(layers))
		for i, l := range layers {
			views[i] = view{src: l, userns: ns, rro: true}
		}
		staged, cleanup, err := stageViews(target+"-idmap", views)
		if err != nil {
			return fmt.Errorf("idmapped layers: %w", err)
		}
		defer cleanup() // overlayfs keeps its own clones
		layers = staged
	}
	lower := make([]string, 0, len(layers))
	for i := len(layers) - 1; i >= 0; i-- {
		lower = append(lower, layers[i])
	}
	return mountOverlay(target, lower, "", "")
}

// narrowToSubPath puts the directory sub of the image mounted at target in
// the image's place. sub is resolved beneath the image (openat2
// RESOLVE_BENEATH), so neither ".." nor a symlink, relative or absolute,
// can lead out of it; the clone is made from the opened directory, so
// what is mounted is what was checked.
func narrowToSubPath(target, sub string) error {
	root, err := unix.Open(target, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(root)
	dir, err := openBeneath(root, sub)
	if err != nil {
		return err
	}
	defer unix.Close(dir)
	clone, err := unix.OpenTree(dir, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
	if err != nil {
		return fmt.Errorf("open_tree: %w", err)
	}
	defer unix.Close(clone)
	if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount the whole image: %w", err)
	}
	return unix.MoveMount(clone, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH)
}

// openBeneath opens the directory path beneath dirfd; what keeps it from
// being one is InvalidArgument, saying why.
func openBeneath(dirfd int, path string) (int, error) {
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	}
	fd, err := unix.Openat2(dirfd, path, &how)
	for i := 0; errors.Is(err, unix.EAGAIN) && i < 16; i++ { // a rename raced a ".." lookup
		fd, err = unix.Openat2(dirfd, path, &how)
	}
	var why string
	switch {
	case err == nil:
		return fd, nil
	case errors.Is(err, unix.ENOENT):
		why = "does not exist in the image"
	case errors.Is(err, unix.ENOTDIR):
		why = "is not a directory"
	case errors.Is(err, unix.EXDEV):
		why = "leaves the image (through \"..\" or a symlink)"
	case errors.Is(err, unix.ELOOP):
		why = "has too many levels of symlinks"
	default:
		return -1, fmt.Errorf("open: %w", err)
	}
	return -1, fmt.Errorf("%s: %w", why, errdefs.ErrInvalidArgument)
}

// statusMount is a CRI mount as ContainerStatus reports it: an image
// volume with the image ID it mounts and its mount on the host, as
// containerd and CRI-O report them.
func statusMount(mnt *runtimeapi.Mount, index int, v *Record) *runtimeapi.Mount {
	out := proto.Clone(mnt).(*runtimeapi.Mount)
	for _, im := range v.ImageMounts {
		if im.Index == index && out.Image != nil {
			if out.Image.UserSpecifiedImage == "" {
				out.Image.UserSpecifiedImage = out.Image.Image
			}
			out.Image.Image, out.HostPath = im.ImageID, im.Path
		}
	}
	return out
}

// heldLayers are the layers a container holds: its rootfs's and its image
// volumes'.
func (r *Record) heldLayers() []string {
	out := append([]string(nil), r.Layers...)
	for _, im := range r.ImageMounts {
		out = append(out, im.Layers...)
	}
	return out
}

// unmountBelow detaches every mount under dir, deepest first: the image
// volumes, and the views a crash may have left staged, before the dir is
// removed (removing through a mount would reach into what it shows).
func unmountBelow(dir string) error {
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return fmt.Errorf("mounts under %s: %w", dir, err)
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i].Mountpoint) > len(mounts[j].Mountpoint) })
	var errs []error
	for _, mnt := range mounts {
		if err := unix.Unmount(mnt.Mountpoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mnt.Mountpoint, err))
		}
	}
	return errors.Join(errs...)
}
