package e2e

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// randomLayer is a layer holding one file of random (incompressible)
// bytes per size, data0, data1, ... in that order.
func randomLayer(t *testing.T, sizes ...int) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i, size := range sizes {
		body := make([]byte, size)
		_, _ = rand.Read(body)
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("data%d", i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(size)}); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write(body)
	}
	tw.Close()
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// ENOSPC while pulling, on an image store that is a 4 MiB tmpfs: a layer
// whose one file does not fit, then one whose first file fits and whose
// second does not (a layer streams into its dir as it downloads; its blob
// is not kept). Each pull fails naming the layer and the lack of space,
// leaves no temporary or partial blob, no half-unpacked layer and no
// record; the code is ResourceExhausted (the node's disk, not the
// registry). Once the tmpfs grows, both pulls work.
func TestChaosPullOnFullDisk(t *testing.T) {
	t.Parallel()
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	host := strings.TrimPrefix(reg.URL, "http://")
	small := randomLayer(t, 64<<10)
	images := map[string]v1.Layer{
		"filefull:1":   randomLayer(t, 6<<20),        // its one file is larger than the store
		"secondfull:1": randomLayer(t, 2<<20, 3<<20), // 2 MiB fit, 3 more do not
	}
	for ref, big := range images {
		img, err := mutate.AppendLayers(empty.Image, small, big)
		if err != nil {
			t.Fatal(err)
		}
		tag, _ := name.NewTag(host+"/library/"+ref, name.Insecure)
		if err := remote.Write(tag, img); err != nil {
			t.Fatal(err)
		}
	}
	e := newEnv(t, withConfig(fmt.Sprintf("[registries.\"*\"]\nendpoints = [\"http://%s\"]\nskip_upstream = true\n", host)))
	store := filepath.Join(e.root, "images")
	if err := os.MkdirAll(store, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", store, "tmpfs", 0, "size=4m,mode=0700"); err != nil {
		t.Fatalf("mount the 4 MiB store: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(store, unix.MNT_DETACH) })
	e.start()
	client := runtimeapi.NewImageServiceClient(e.conn)
	pull := func(ref string) (string, error) {
		resp, err := client.PullImage(e.ctx(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		return resp.GetImageRef(), err
	}

	for _, ref := range []string{"filefull:1", "secondfull:1"} {
		digest, _ := images[ref].Digest()
		_, err := pull(ref)
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "layer "+digest.String()) ||
			!strings.Contains(err.Error(), "no space left on device") {
			t.Fatalf("pull of %s on a full store = %v; want ResourceExhausted, ENOSPC naming layer %s", ref, err, digest)
		}
		t.Logf("%s: %v", ref, err)
		assertNoPartialImage(t, store, images[ref])
		list, err := client.ListImages(e.ctx(), &runtimeapi.ListImagesRequest{})
		if err != nil || len(list.Images) != 0 {
			t.Errorf("after a failed pull of %s, ListImages = %v, %v", ref, list.GetImages(), err)
		}
	}

	if err := unix.Mount("tmpfs", store, "tmpfs", unix.MS_REMOUNT, "size=64m,mode=0700"); err != nil {
		t.Fatalf("grow the store: %v", err)
	}
	for ref := range images {
		id, err := pull(ref)
		if err != nil {
			t.Fatalf("pull of %s once space is back: %v", ref, err)
		}
		if _, err := client.RemoveImage(e.ctx(), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: id}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Unmount(store, 0); err != nil {
		t.Fatalf("unmount the store: %v", err)
	}
	e.assertNoLeaks()
}

// assertNoPartialImage: no temporary blob, nothing in tmp/, no layer dir
// of the layer that failed and no blob of it.
func assertNoPartialImage(t *testing.T, store string, failed v1.Layer) {
	t.Helper()
	digest, _ := failed.Digest()
	diffID, _ := failed.DiffID()
	blobs, _ := os.ReadDir(filepath.Join(store, "blobs", "sha256"))
	for _, b := range blobs {
		if strings.HasPrefix(b.Name(), ".") {
			t.Errorf("temporary blob %s left", b.Name())
		}
		if b.Name() == digest.Hex {
			t.Errorf("the blob of the layer that failed, %s, is kept", digest)
		}
	}
	if tmp, _ := os.ReadDir(filepath.Join(store, "tmp")); len(tmp) > 0 {
		t.Errorf("tmp/ holds %d entries after a failed pull", len(tmp))
	}
	if exists(filepath.Join(store, "layers", diffID.Hex)) {
		t.Errorf("the layer that failed, %s, has a layer dir", diffID)
	}
}
