package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// benchImages is what the image scenarios pull: images pushed to an
// in-process registry on 127.0.0.1 that both runtimes use as the mirror
// of docker.io.
type benchImages struct {
	host  string
	srv   *httptest.Server
	blobs *benchBlobs
	// cold are 5-layer images of ~50 MB with no layer in common; warm[i]
	// has cold[i]'s layers under another config.
	cold, warm []string
	// small are the images ListImages is timed with.
	small []string
	// big are the images of the big image scenario (bigimages.go).
	big []*bigImage
}

const (
	coldImages  = 4
	layerSize   = 10 << 20
	layersPer   = 5
	smallImages = 100
)

// startImages pushes the busybox image and, with all, the images of the
// pull scenarios.
func startImages(all bool) (*benchImages, error) {
	b := &benchImages{blobs: newBenchBlobs()}
	b.srv = httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithBlobHandler(b.blobs)))
	b.host = strings.TrimPrefix(b.srv.URL, "http://")
	push := func(repoTag string, img v1.Image) error {
		ref, err := name.NewTag(b.host+"/"+repoTag, name.Insecure)
		if err != nil {
			return err
		}
		return remote.Write(ref, img)
	}
	bb, err := busyboxImage()
	if err != nil {
		return nil, err
	}
	if err := push("bench/busybox:1", bb); err != nil {
		return nil, err
	}
	if !all {
		return b, nil
	}
	fmt.Fprintf(os.Stderr, "husk-bench: building %d images of %d x %d MiB and %d small ones\n", coldImages, layersPer, layerSize>>20, smallImages)
	for i := 0; i < coldImages; i++ {
		img := empty.Image
		for l := 0; l < layersPer; l++ {
			layer, err := random.Layer(layerSize, types.DockerLayer)
			if err != nil {
				return nil, err
			}
			if img, err = mutate.AppendLayers(img, layer); err != nil {
				return nil, err
			}
		}
		tag := fmt.Sprintf("bench/cold:%d", i)
		if err := push(tag, img); err != nil {
			return nil, err
		}
		warm, err := mutate.Config(img, v1.Config{Labels: map[string]string{"warm": "yes"}})
		if err != nil {
			return nil, err
		}
		if err := push(fmt.Sprintf("bench/warm:%d", i), warm); err != nil {
			return nil, err
		}
		b.cold = append(b.cold, "docker.io/"+tag)
		b.warm = append(b.warm, fmt.Sprintf("docker.io/bench/warm:%d", i))
	}
	for i := 0; i < smallImages; i++ {
		img, err := random.Image(256, 1)
		if err != nil {
			return nil, err
		}
		tag := fmt.Sprintf("bench/small:%d", i)
		if err := push(tag, img); err != nil {
			return nil, err
		}
		b.small = append(b.small, "docker.io/"+tag)
	}
	return b, nil
}

func (b *benchImages) close() { b.srv.Close() }

// benchImagePulls times cold pulls, warm pulls (every layer present) and
// ListImages with the small images pulled too.
func benchImagePulls(ctx context.Context, r *runtimeUnderTest, b *benchImages, rec record) error {
	images := runtimeapi.NewImageServiceClient(r.conn)
	pull := func(ref string) (time.Duration, error) {
		t := time.Now()
		_, err := images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		return time.Since(t), err
	}
	fmt.Fprintf(os.Stderr, "husk-bench: %s: image pulls\n", r.side)
	for i := range b.cold {
		d, err := pull(b.cold[i])
		if err != nil {
			return fmt.Errorf("pull %s: %w", b.cold[i], err)
		}
		rec("PullImage cold (5 x 10 MiB)", "ms", 1.0, ms(d))
		if d, err = pull(b.warm[i]); err != nil {
			return fmt.Errorf("pull %s: %w", b.warm[i], err)
		}
		rec("PullImage warm (layers present)", "ms", 0.5, ms(d))
	}
	for _, ref := range b.small {
		if _, err := pull(ref); err != nil {
			return fmt.Errorf("pull %s: %w", ref, err)
		}
	}
	for i := 0; i < 30; i++ {
		t := time.Now()
		resp, err := images.ListImages(ctx, &runtimeapi.ListImagesRequest{})
		if err != nil {
			return err
		}
		if len(resp.Images) < smallImages {
			return fmt.Errorf("ListImages: %d images, want at least %d", len(resp.Images), smallImages)
		}
		rec(listImagesScenario, "ms", 0, ms(time.Since(t)))
	}
	return nil
}

// listImagesScenario: the 100 small images plus the 8 large ones (and
// containerd's pause image).
const listImagesScenario = "ListImages (108+ images)"
