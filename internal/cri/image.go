package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/image"
)

// ImageServer implements the CRI ImageService over the image store.
type ImageServer struct {
	runtimeapi.UnimplementedImageServiceServer
	images     *image.Service
	containers ContainerFS
}

// ContainerFS is what ImageFsInfo reports of the containers' writable
// layers: their usage as last measured, and where they are.
type ContainerFS interface {
	FsUsage() (bytes, inodes uint64, at time.Time, mountpoint string)
}

// NewImageServer returns the ImageService.
func NewImageServer(images *image.Service, containers ContainerFS) *ImageServer {
	return &ImageServer{images: images, containers: containers}
}

func (s *ImageServer) criImage(img *image.Image) *runtimeapi.Image {
	out := &runtimeapi.Image{
		Id:          img.ID,
		RepoTags:    img.RepoTags,
		RepoDigests: img.RepoDigests,
		Size:        img.Size,
		Pinned:      s.images.Pinned(img),
	}
	// The kubelet wants a numeric user as uid, a name as username.
	user := img.User
	if i := indexByte(user, ':'); i >= 0 {
		user = user[:i]
	}
	if uid, err := strconv.ParseInt(user, 10, 64); err == nil {
		out.Uid = &runtimeapi.Int64Value{Value: uid}
	} else {
		out.Username = user
	}
	out.Spec = &runtimeapi.ImageSpec{Image: img.ID, Annotations: img.Labels}
	return out
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

func (s *ImageServer) ListImages(_ context.Context, req *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	imgs, err := s.images.List()
	if err != nil {
		return nil, toStatus(err)
	}
	var want *image.Image
	if f := req.GetFilter().GetImage().GetImage(); f != "" {
		want, err = s.images.Resolve(f)
		if errdefs.IsNotFound(err) {
			return &runtimeapi.ListImagesResponse{}, nil
		}
		if err != nil {
			return nil, toStatus(err)
		}
	}
	resp := &runtimeapi.ListImagesResponse{}
	for _, img := range imgs {
		if want == nil || img.ID == want.ID {
			resp.Images = append(resp.Images, s.criImage(img))
		}
	}
	return resp, nil
}

// ImageStatus of an image that is not present is an empty response, as
// the CRI defines.
func (s *ImageServer) ImageStatus(_ context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	img, err := s.images.Resolve(req.GetImage().GetImage())
	if errdefs.IsNotFound(err) {
		return &runtimeapi.ImageStatusResponse{}, nil
	}
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &runtimeapi.ImageStatusResponse{Image: s.criImage(img)}
	if req.GetVerbose() {
		info, err := json.Marshal(map[string]json.RawMessage{"manifest": img.Manifest, "config": img.Config})
		if err != nil {
			return nil, toStatus(fmt.Errorf("image %s: encode info: %w", img.ID, err))
		}
		resp.Info = map[string]string{"info": string(info)}
	}
	return resp, nil
}

func (s *ImageServer) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	var auth *image.Auth
	if a := req.GetAuth(); a != nil {
		auth = &image.Auth{Username: a.GetUsername(), Password: a.GetPassword(), Auth: a.GetAuth(),
			IdentityToken: a.GetIdentityToken(), RegistryToken: a.GetRegistryToken()}
	}
	id, err := s.images.Pull(ctx, req.GetImage().GetImage(), auth)
	if err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.PullImageResponse{ImageRef: id}, nil
}

// RemoveImage of an image that is not present succeeds, as the CRI requires.
func (s *ImageServer) RemoveImage(_ context.Context, req *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	if err := s.images.Remove(req.GetImage().GetImage()); err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.RemoveImageResponse{}, nil
}

// ImageFsInfo reports the usage of the image store and of the containers'
// writable layers (<root>/containers), each on the filesystem holding it,
// as the kubelet's separate image and container filesystems (the same
// mount point when they share one). Both figures are kept as they change,
// never walked here: the kubelet polls this.
func (s *ImageServer) ImageFsInfo(context.Context, *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	fsUsage := func(bytes, inodes uint64, at time.Time, mount string) []*runtimeapi.FilesystemUsage {
		return []*runtimeapi.FilesystemUsage{{
			Timestamp:  at.UnixNano(),
			FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: mount},
			UsedBytes:  &runtimeapi.UInt64Value{Value: bytes},
			InodesUsed: &runtimeapi.UInt64Value{Value: inodes},
		}}
	}
	return &runtimeapi.ImageFsInfoResponse{
		ImageFilesystems:     fsUsage(s.images.FsInfo()),
		ContainerFilesystems: fsUsage(s.containers.FsUsage()),
	}, nil
}
