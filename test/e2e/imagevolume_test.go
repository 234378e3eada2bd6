package e2e

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"log"
	"maps"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Names of the image volume images, served by a registry of their own
// ([registries."volumes.test"]).
const (
	kittenRef = "volumes.test/kitten:1"
	singleRef = "volumes.test/single:1"
)

// tarLayer makes a layer of entries: "path/" is a directory, "path -> x" a
// symlink to x, "path" a file with body; files of "owned" belong to 1000.
func tarLayer(t *testing.T, entries map[string]string) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range slices.Sorted(maps.Keys(entries)) {
		h := &tar.Header{Name: p, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(entries[p]))}
		if strings.HasSuffix(p, "/") {
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		} else if from, to, ok := strings.Cut(p, " -> "); ok {
			h.Name, h.Typeflag, h.Linkname, h.Size = from, tar.TypeSymlink, to, 0
		}
		if strings.Contains(p, "owned") {
			h.Uid, h.Gid = 1000, 1000
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := tw.Write([]byte(entries[p])); err != nil {
				t.Fatal(err)
			}
		}
	}
	tw.Close()
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// volumeImages are what the ImageVolume specs of the kubelet read: a
// two-layer "kitten" with data.json and an Alpine etc/ (the upper layer
// deletes a file of the lower and holds symlinks that lead out), and an
// image of one layer.
func volumeImages(t *testing.T) map[string]v1.Image {
	t.Helper()
	lower := tarLayer(t, map[string]string{
		"etc/": "", "etc/os-release": "NAME=\"Alpine Linux\"\n", "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
		"data.json": "{}", "gone": "deleted by the upper layer", "owned": "by 1000",
	})
	upper := tarLayer(t, map[string]string{
		"data.json": `{"image": "kitten.jpg"}`, ".wh.gone": "",
		"escape -> ../../../..": "", "abs -> /etc": "",
	})
	kitten, err := mutate.AppendLayers(empty.Image, lower, upper)
	if err != nil {
		t.Fatal(err)
	}
	single, err := mutate.AppendLayers(empty.Image, tarLayer(t, map[string]string{"single.txt": "one layer"}))
	if err != nil {
		t.Fatal(err)
	}
	return map[string]v1.Image{kittenRef: kitten, singleRef: single}
}

// serveVolumeImages serves the volume images from a registry of the
// test's; the option points huskd's volumes.test at it.
func serveVolumeImages(t *testing.T) (map[string]v1.Image, envOption) {
	t.Helper()
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	host := strings.TrimPrefix(reg.URL, "http://")
	imgs := volumeImages(t)
	for ref, img := range imgs {
		tag, _ := name.NewTag(host+"/"+strings.TrimPrefix(ref, "volumes.test/"), name.Insecure)
		if err := remote.Write(tag, img); err != nil {
			t.Fatal(err)
		}
	}
	return imgs, withConfig(fmt.Sprintf("[registries.\"volumes.test\"]\nendpoints = [\"http://%s\"]\nskip_upstream = true\n", host))
}

// imageVolumeEnv is a containerEnv that also pulled the volume images; it
// returns each one's image ID (what the kubelet puts in Mount.image).
func imageVolumeEnv(t *testing.T, opts ...envOption) (*env, map[string]v1.Image, map[string]string) {
	t.Helper()
	imgs, registryConfig := serveVolumeImages(t)
	e := containerEnvWith(t, append(opts, registryConfig)...)
	ids := map[string]string{}
	for ref := range imgs {
		resp, err := runtimeapi.NewImageServiceClient(e.conn).PullImage(e.ctx(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if err != nil {
			t.Fatalf("PullImage %s: %v\n%s", ref, err, e.logs())
		}
		ids[ref] = resp.ImageRef
	}
	return e, imgs, ids
}

// imageMount is a Mount.image as the kubelet sends it: the pulled image's
// ID, the reference the pod named, read-only, no host path.
func imageMount(containerPath, id, ref, subPath string) *runtimeapi.Mount {
	return &runtimeapi.Mount{ContainerPath: containerPath, Readonly: true, ImageSubPath: subPath,
		Image: &runtimeapi.ImageSpec{Image: id, UserSpecifiedImage: ref}}
}

// Image volumes, with runc and crun: several layers as a read-only
// overlay (the upper's whiteout hides the lower's file), one layer bound
// read-only, the same image twice, an image_sub_path; ContainerStatus
// reports each with its image. What the kubelet's ImageVolume specs read
// (data.json, etc/os-release, etc/passwd through subPath "etc") is there.
func TestImageVolumes(t *testing.T) {
	t.Parallel()
	e, _, ids := imageVolumeEnv(t)
	for _, handler := range []string{"runc", "crun"} {
		t.Run(handler, func(t *testing.T) {
			pod := e.podConfig("imgvol-" + handler)
			podID := e.runPod(pod, handler)
			cfg := ctrConfig("reader", "sleep", "3600")
			cfg.Mounts = []*runtimeapi.Mount{
				imageMount("/volume-0", ids[kittenRef], kittenRef, ""),
				imageMount("/volume-1", kittenRef, "", ""), // by name, as crictl users write it
				imageMount("/single", ids[singleRef], singleRef, ""),
				imageMount("/sub", ids[kittenRef], kittenRef, "etc"),
			}
			id := e.run(podID, pod, cfg)
			checks := []struct{ cmd, want string }{
				{"cat /volume-0/data.json /volume-1/data.json", `{"image": "kitten.jpg"}{"image": "kitten.jpg"}`},
				{"cat /volume-0/etc/os-release", "NAME=\"Alpine Linux\"\n"},
				{"test -e /volume-0/gone && echo there || echo whited-out", "whited-out\n"},
				{"cat /single/single.txt", "one layer"},
				{"cat /sub/passwd; ls /sub | tr '\\n' ' '", "root:x:0:0:root:/root:/bin/sh\nos-release passwd "},
			}
			for _, path := range []string{"/volume-0", "/single", "/sub"} {
				checks = append(checks, struct{ cmd, want string }{
					"touch " + path + "/x 2>/dev/null && echo writable || echo read-only", "read-only\n"})
			}
			for _, c := range checks {
				if r := e.exec(id, 10, "sh", "-c", c.cmd); string(r.Stdout) != c.want {
					t.Errorf("%s: %q (stderr %q), want %q", c.cmd, r.Stdout, r.Stderr, c.want)
				}
			}
			st, err := e.rt.ContainerStatus(e.ctx(), &runtimeapi.ContainerStatusRequest{ContainerId: id})
			if err != nil {
				t.Fatal(err)
			}
			wantRefs := []string{kittenRef, kittenRef, singleRef, kittenRef}
			for i, m := range st.Status.Mounts {
				if m.GetImage().GetImage() != ids[wantRefs[i]] || m.GetImage().GetUserSpecifiedImage() != wantRefs[i] || m.HostPath == "" || !m.Readonly {
					t.Errorf("status mounts[%d] = %v, want image %s (%s) and its host mount", i, m, ids[wantRefs[i]], wantRefs[i])
				}
			}
			if st.Status.Mounts[3].ImageSubPath != "etc" {
				t.Errorf("status mounts[3].image_sub_path = %q", st.Status.Mounts[3].ImageSubPath)
			}
			e.stopRemove(podID)
			e.assertNoLeaks(podID, id)
		})
	}
}

// An image_sub_path that does not exist, is not a directory or leads out
// of the image, a writable image mount and an image that was not pulled
// fail CreateContainer with the field named; each failure undoes its
// mounts and layer holds.
func TestImageVolumeBadInput(t *testing.T) {
	t.Parallel()
	e, imgs, ids := imageVolumeEnv(t)
	pod := e.podConfig("imgvol-bad")
	podID := e.runPod(pod, "")
	kitten := ids[kittenRef]
	writable := imageMount("/v", kitten, kittenRef, "")
	writable.Readonly = false
	bad := []struct {
		name  string
		mount *runtimeapi.Mount
		code  codes.Code
		want  string
	}{
		{"missing", imageMount("/v", kitten, kittenRef, "not-existing"), codes.InvalidArgument, `mounts[0].image_sub_path "not-existing" in image ` + kitten + `: does not exist in the image`},
		{"file", imageMount("/v", kitten, kittenRef, "data.json"), codes.InvalidArgument, `mounts[0].image_sub_path "data.json" in image ` + kitten + `: is not a directory`},
		{"dotdot", imageMount("/v", kitten, kittenRef, "etc/../.."), codes.InvalidArgument, `mounts[0].image_sub_path "etc/../.." leaves the image`},
		{"symlink", imageMount("/v", kitten, kittenRef, "escape"), codes.InvalidArgument, `mounts[0].image_sub_path "escape" in image ` + kitten + `: leaves the image`},
		{"absolute symlink", imageMount("/v", kitten, kittenRef, "abs"), codes.InvalidArgument, `mounts[0].image_sub_path "abs" in image ` + kitten + `: leaves the image`},
		{"writable", writable, codes.InvalidArgument, "mounts[0].readonly must be set: an image mount is read-only"},
		{"not pulled", imageMount("/v", "volumes.test/nosuch:1", "", ""), codes.NotFound, `mounts[0].image "volumes.test/nosuch:1"`},
	}
	for _, tt := range bad {
		cfg := ctrConfig("bad", "true")
		cfg.Mounts = []*runtimeapi.Mount{imageMount("/ok", ids[singleRef], singleRef, ""), tt.mount}
		tt.want = strings.Replace(tt.want, "mounts[0]", "mounts[1]", 1)
		_, err := e.rt.CreateContainer(e.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
		if status.Code(err) != tt.code || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %s with %q", tt.name, err, tt.code, tt.want)
		}
		e.assertNoContainerLeft()
	}
	// No hold outlives the failures: with the images removed, a restart's
	// GC frees every layer of theirs.
	images := runtimeapi.NewImageServiceClient(e.conn)
	for ref := range imgs {
		if _, err := images.RemoveImage(e.ctx(), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
			t.Fatal(err)
		}
	}
	e.sigtermRestart()
	for ref, img := range imgs {
		if left := e.layersOf(img); len(left) > 0 {
			t.Errorf("%s: layers %v left after failed creates, image removal and a restart", ref, left)
		}
	}
	e.stopRemove(podID)
	e.assertNoLeaks(podID)
}

// A container holds its image volumes' layers: the image removed and
// huskd killed and restarted (recovery holds them again before GC), the
// volume still reads; once the container is removed, a restart frees them.
func TestImageVolumeHoldsLayers(t *testing.T) {
	t.Parallel()
	e, imgs, ids := imageVolumeEnv(t)
	pod := e.podConfig("imgvol-hold")
	podID := e.runPod(pod, "")
	cfg := ctrConfig("holder", "sleep", "3600")
	cfg.Mounts = []*runtimeapi.Mount{imageMount("/volume", ids[kittenRef], kittenRef, "")}
	id := e.run(podID, pod, cfg)
	images := runtimeapi.NewImageServiceClient(e.conn)
	if _, err := images.RemoveImage(e.ctx(), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: kittenRef}}); err != nil {
		t.Fatal(err)
	}
	e.kill9()
	e.start()
	if n := len(e.layersOf(imgs[kittenRef])); n != 2 {
		t.Errorf("after a crash and restart: %d of the volume's 2 layers left", n)
	}
	if r := e.exec(id, 10, "cat", "/volume/data.json"); !strings.Contains(string(r.Stdout), "kitten.jpg") {
		t.Errorf("volume after a restart: %q %q", r.Stdout, r.Stderr)
	}
	e.stopRemove(podID)
	e.sigtermRestart()
	if left := e.layersOf(imgs[kittenRef]); len(left) > 0 {
		t.Errorf("container removed, then a restart: layers %v left", left)
	}
	e.assertNoLeaks(podID, id)
}

// A pod with its own user namespace sees its image volumes through
// idmapped mounts, as its rootfs: the image's root is the pod's root, its
// uid 1000 the pod's 1000 (not the overflow ID).
func TestImageVolumeUserNamespace(t *testing.T) {
	t.Parallel()
	e, _, ids := imageVolumeEnv(t)
	for _, handler := range []string{"runc", "crun"} {
		t.Run(handler, func(t *testing.T) {
			pod := e.podConfig("imgvol-userns-" + handler)
			mapping := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 300000, Length: 65536}}
			pod.Linux.SecurityContext.NamespaceOptions.UsernsOptions = &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: mapping, Gids: mapping}
			podID := e.runPod(pod, handler)
			cfg := ctrConfig("u", "sleep", "3600")
			cfg.Mounts = []*runtimeapi.Mount{
				imageMount("/volume", ids[kittenRef], kittenRef, ""),
				imageMount("/single", ids[singleRef], singleRef, ""),
				imageMount("/sub", ids[kittenRef], kittenRef, "etc"),
			}
			for _, m := range cfg.Mounts { // as the kubelet sends them in a user-namespaced pod
				m.UidMappings, m.GidMappings = mapping, mapping
			}
			id := e.run(podID, pod, cfg)
			cmd := "stat -c %u:%g /volume/data.json /volume/owned /single/single.txt /sub/passwd | tr '\\n' ' '; cat /proc/self/uid_map | tr -s ' '"
			want := "0:0 1000:1000 0:0 0:0  0 300000 65536\n"
			if r := e.exec(id, 10, "sh", "-c", cmd); string(r.Stdout) != want {
				t.Errorf("owners seen in the pod: %q (stderr %q), want %q", r.Stdout, r.Stderr, want)
			}
			e.stopRemove(podID)
			e.assertNoLeaks(podID, id)
		})
	}
}

// sigtermRestart stops huskd with SIGTERM and starts it again.
func (e *env) sigtermRestart() {
	e.t.Helper()
	if err := e.stop(); err != nil {
		e.t.Fatal(err)
	}
	e.start()
}

// layersOf lists the unpacked layers of img still in the image store.
func (e *env) layersOf(img v1.Image) []string {
	e.t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, d := range cf.RootFS.DiffIDs {
		if _, err := os.Stat(filepath.Join(e.root, "images", "layers", d.Hex)); err == nil {
			out = append(out, d.String())
		}
	}
	return out
}

// assertNoContainerLeft fails when a container dir or a mount under the
// containers' dirs is left (after failed creates, while the pod runs).
func (e *env) assertNoContainerLeft() {
	e.t.Helper()
	var left []string
	for _, d := range []string{filepath.Join(e.root, "containers"), filepath.Join(e.state, "containers")} {
		ents, _ := os.ReadDir(d)
		for _, en := range ents {
			left = append(left, filepath.Join(d, en.Name()))
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], filepath.Join(e.root, "containers")+"/") {
			left = append(left, "mount "+f[4])
		}
	}
	if len(left) > 0 {
		e.t.Errorf("left after a failed CreateContainer: %v\n%s", left, e.logs())
	}
}
