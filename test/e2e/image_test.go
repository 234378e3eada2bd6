package e2e

import (
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Images through the CRI: pull from an in-process registry used as the
// mirror of every registry, list, status, restart, remove.
func TestImagesThroughCRI(t *testing.T) {
	t.Parallel()
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	host := strings.TrimPrefix(reg.URL, "http://")
	img, err := random.Image(4096, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.NewTag(host+"/library/busybox:1.36", name.Insecure)
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, withConfig(fmt.Sprintf("[registries.\"*\"]\nendpoints = [\"http://%s\"]\nskip_upstream = true\n", host)))
	e.start()
	images := runtimeapi.NewImageServiceClient(e.conn)
	ctx := e.ctx()
	pulled, err := images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "busybox:1.36"}})
	if err != nil {
		t.Fatalf("PullImage: %v\n%s", err, e.logs())
	}
	cfg, _ := img.ConfigName()
	if pulled.ImageRef != cfg.String() {
		t.Errorf("ImageRef %s, want %s", pulled.ImageRef, cfg)
	}
	e.kill9()
	e.start()
	images = runtimeapi.NewImageServiceClient(e.conn)
	list, err := images.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil || len(list.Images) != 1 || list.Images[0].RepoTags[0] != "docker.io/library/busybox:1.36" {
		t.Fatalf("ListImages after restart = %v, %v", list, err)
	}
	st, err := images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "docker.io/library/busybox:1.36"}, Verbose: true})
	if err != nil || st.Image.GetId() != cfg.String() || !strings.Contains(st.Info["info"], "manifest") {
		t.Errorf("ImageStatus = %v, %v", st, err)
	}
	if _, err := images.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: pulled.ImageRef}}); err != nil {
		t.Fatal(err)
	}
	if st, err := images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "busybox:1.36"}}); err != nil || st.Image != nil {
		t.Errorf("ImageStatus after remove = %v, %v", st, err)
	}
	// An image nobody serves: the error names the endpoint tried.
	_, err = images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "registry.k8s.io/nosuch:1"}})
	if err == nil || !strings.Contains(err.Error(), host) {
		t.Errorf("pull of a missing image = %v", err)
	}
}
