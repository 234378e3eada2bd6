package cri

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func (s *RuntimeServer) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	id, err := s.opts.Containers.Create(ctx, req.GetPodSandboxId(), req.GetConfig())
	if err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.CreateContainerResponse{ContainerId: id}, nil
}

func (s *RuntimeServer) StartContainer(ctx context.Context, req *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	if err := s.opts.Containers.Start(ctx, req.GetContainerId()); err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.StartContainerResponse{}, nil
}

func (s *RuntimeServer) StopContainer(ctx context.Context, req *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	if req.GetTimeout() < 0 {
		return nil, toStatus(fmt.Errorf("timeout %d is negative: %w", req.GetTimeout(), errdefs.ErrInvalidArgument))
	}
	if err := s.opts.Containers.Stop(ctx, req.GetContainerId(), time.Duration(req.GetTimeout())*time.Second); err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.StopContainerResponse{}, nil
}

func (s *RuntimeServer) RemoveContainer(ctx context.Context, req *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	if err := s.opts.Containers.Remove(ctx, req.GetContainerId()); err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.RemoveContainerResponse{}, nil
}

func (s *RuntimeServer) ListContainers(_ context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	items, err := s.listContainers(req.GetFilter())
	if err != nil {
		return nil, toStatus(err)
	}
	return withItems(&runtimeapi.ListContainersResponse{}, "containers", items), nil
}

// listContainers validates the filter and lists the encoded items, for
// ListContainers and StreamContainers.
func (s *RuntimeServer) listContainers(f *runtimeapi.ContainerFilter) ([][]byte, error) {
	if st := f.GetState(); st != nil {
		if _, ok := runtimeapi.ContainerState_name[int32(st.GetState())]; !ok {
			return nil, fmt.Errorf("filter.state: unknown state %d: %w", st.GetState(), errdefs.ErrInvalidArgument)
		}
	}
	return s.opts.Containers.ListEncoded(f)
}

func (s *RuntimeServer) ContainerStatus(_ context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	st, info, err := s.opts.Containers.Status(req.GetContainerId(), req.GetVerbose())
	if err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.ContainerStatusResponse{Status: st, Info: info}, nil
}

func (s *RuntimeServer) UpdateContainerResources(ctx context.Context, req *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error) {
	if err := s.opts.Containers.Update(ctx, req.GetContainerId(), req.GetLinux()); err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.UpdateContainerResourcesResponse{}, nil
}

func (s *RuntimeServer) ReopenContainerLog(ctx context.Context, req *runtimeapi.ReopenContainerLogRequest) (*runtimeapi.ReopenContainerLogResponse, error) {
	if err := s.opts.Containers.Reopen(ctx, req.GetContainerId()); err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.ReopenContainerLogResponse{}, nil
}

func (s *RuntimeServer) ExecSync(ctx context.Context, req *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	if req.GetTimeout() < 0 {
		return nil, toStatus(fmt.Errorf("timeout %d is negative: %w", req.GetTimeout(), errdefs.ErrInvalidArgument))
	}
	out, errOut, code, err := s.opts.Containers.ExecSync(ctx, req.GetContainerId(), req.GetCmd(), time.Duration(req.GetTimeout())*time.Second)
	if err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.ExecSyncResponse{Stdout: out, Stderr: errOut, ExitCode: code}, nil
}

// errNoCheckpoint says why checkpoints are Unimplemented: they go through
// CRIU, and Debian 12's CRIU (3.17.1) fails on the kernel of the machines
// husk is tested on, so husk could not test any implementation.
var errNoCheckpoint = fmt.Errorf("checkpoint and restore are not implemented by husk: they need CRIU, and the CRIU "+
	"husk is tested with (Debian's 3.17.1) fails on its test kernel (\"vdso: Unexpected rt vDSO area bounds\"), "+
	"so no implementation could be tested: %w", errdefs.ErrNotImplemented)

func (s *RuntimeServer) CheckpointContainer(context.Context, *runtimeapi.CheckpointContainerRequest) (*runtimeapi.CheckpointContainerResponse, error) {
	return nil, toStatus(errNoCheckpoint)
}

func (s *RuntimeServer) CheckpointPod(context.Context, *runtimeapi.CheckpointPodRequest) (*runtimeapi.CheckpointPodResponse, error) {
	return nil, toStatus(errNoCheckpoint)
}

func (s *RuntimeServer) RestorePod(context.Context, *runtimeapi.RestorePodRequest) (*runtimeapi.RestorePodResponse, error) {
	return nil, toStatus(errNoCheckpoint)
}
