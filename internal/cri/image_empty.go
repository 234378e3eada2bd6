package cri

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// EmptyImageServer is the ImageService of a husk that has no image store
// yet: it answers truthfully for a store that holds nothing, so the
// kubelet's and crictl's connection checks (ImageFsInfo) pass and pods that
// need no image (sandboxes) run; pulling is refused with a clear error
// until the image store exists (issue 4).
type EmptyImageServer struct {
	runtimeapi.UnimplementedImageServiceServer
	dir string
}

// NewEmptyImageServer reports on dir, where images will be kept.
func NewEmptyImageServer(dir string) (*EmptyImageServer, error) {
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, fmt.Errorf("image dir: %w", err)
	}
	return &EmptyImageServer{dir: dir}, nil
}

func (s *EmptyImageServer) ListImages(context.Context, *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	return &runtimeapi.ListImagesResponse{}, nil
}

// ImageStatus of an image that is not present is an empty response, not
// an error, as the CRI defines.
func (s *EmptyImageServer) ImageStatus(context.Context, *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	return &runtimeapi.ImageStatusResponse{}, nil
}

func (s *EmptyImageServer) PullImage(_ context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	return nil, status.Errorf(codes.Unimplemented, "pull %q: this husk has no image store yet", req.GetImage().GetImage())
}

// RemoveImage of an image that is not present succeeds, as the CRI requires.
func (s *EmptyImageServer) RemoveImage(context.Context, *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	return &runtimeapi.RemoveImageResponse{}, nil
}

// ImageFsInfo reports the bytes and inodes used under the image dir and the
// filesystem it lives on.
func (s *EmptyImageServer) ImageFsInfo(context.Context, *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	var bytes, inodes uint64
	err := filepath.WalkDir(s.dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		inodes++
		if info, err := d.Info(); err == nil {
			var st unix.Stat_t
			if sys, ok := info.Sys().(*unix.Stat_t); ok {
				st = *sys
			}
			bytes += uint64(st.Blocks) * 512
		}
		return nil
	})
	if err != nil {
		return nil, toStatus(fmt.Errorf("image fs info: %w", err))
	}
	mount, err := mountPoint(s.dir)
	if err != nil {
		return nil, toStatus(fmt.Errorf("image fs info: %w", err))
	}
	usage := &runtimeapi.FilesystemUsage{
		Timestamp:  time.Now().UnixNano(),
		FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: mount},
		UsedBytes:  &runtimeapi.UInt64Value{Value: bytes},
		InodesUsed: &runtimeapi.UInt64Value{Value: inodes},
	}
	return &runtimeapi.ImageFsInfoResponse{ImageFilesystems: []*runtimeapi.FilesystemUsage{usage}}, nil
}

// mountPoint finds the mount point of the filesystem holding path: the
// deepest ancestor on the same device whose parent is on another.
func mountPoint(path string) (string, error) {
	p, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return "", err
	}
	for p != "/" {
		parent := filepath.Dir(p)
		var pst unix.Stat_t
		if err := unix.Stat(parent, &pst); err != nil {
			return "", err
		}
		if pst.Dev != st.Dev {
			return p, nil
		}
		p = parent
	}
	return "/", nil
}
