package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/container"
	"github.com/huskrt/husk/internal/network"
	"github.com/huskrt/husk/internal/sandbox"
	"github.com/huskrt/husk/internal/stats"
)

// RuntimeName and RuntimeAPIVersion are what Version reports.
const (
	RuntimeName       = "husk"
	RuntimeAPIVersion = "v1"
)

// RuntimeOptions configure the RuntimeService.
type RuntimeOptions struct {
	Version    string
	Sandboxes  *sandbox.Manager
	Containers *container.Manager
	// Events feeds GetContainerEvents.
	Events *Events
	// Stream serves the Exec, Attach and PortForward URLs.
	Stream  *StreamServer
	Network *network.Manager
	// Handlers are the configured RuntimeClass handler names.
	Handlers []string
	// CgroupDriver is "cgroupfs" or "systemd".
	CgroupDriver string
	// ConfigInfo is shown by verbose Status (the effective config), JSON
	// encoded: its JSON form must carry no secret (config.Config's
	// MarshalJSON redacts them and uses the TOML key names).
	ConfigInfo any
	Logger     *slog.Logger
}

// RuntimeServer implements the CRI RuntimeService.
type RuntimeServer struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	opts RuntimeOptions
	// podRates turns the pods' CPU usage into rates (usage_nano_cores).
	podRates stats.CPURates
}

// NewRuntimeServer returns the RuntimeService over the domain managers.
func NewRuntimeServer(opts RuntimeOptions) *RuntimeServer {
	sort.Strings(opts.Handlers)
	s := &RuntimeServer{opts: opts}
	if opts.Events != nil {
		opts.Events.start(s)
	}
	return s
}

func (s *RuntimeServer) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{
		Version:           "0.1.0",
		RuntimeName:       RuntimeName,
		RuntimeVersion:    s.opts.Version,
		RuntimeApiVersion: RuntimeAPIVersion,
	}, nil
}

func (s *RuntimeServer) Status(_ context.Context, req *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	runtimeReady := &runtimeapi.RuntimeCondition{Type: runtimeapi.RuntimeReady, Status: true}
	networkReady := &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: true}
	if err := s.opts.Network.Status(); err != nil {
		networkReady.Status = false
		networkReady.Reason = "NetworkPluginNotReady"
		networkReady.Message = fmt.Sprintf("CNI network not ready: %v", err)
	}
	resp := &runtimeapi.StatusResponse{
		Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{runtimeReady, networkReady}},
		// Strict and Merge are both applied (internal/container/user.go).
		Features: &runtimeapi.RuntimeFeatures{SupplementalGroupsPolicy: true},
	}
	// The empty name is the default handler, which the CRI lists first.
	for _, h := range append([]string{""}, s.opts.Handlers...) {
		resp.RuntimeHandlers = append(resp.RuntimeHandlers, &runtimeapi.RuntimeHandler{
			Name: h,
			// Both need nothing of the runtime beyond joining a user
			// namespace and bind mounting: huskd stages idmapped and
			// recursively read-only views itself where the runtime cannot
			// (internal/container/views.go).
			Features: &runtimeapi.RuntimeHandlerFeatures{RecursiveReadOnlyMounts: true, UserNamespaces: true},
		})
	}
	if req.GetVerbose() {
		b, err := json.Marshal(s.opts.ConfigInfo)
		if err != nil {
			return nil, toStatus(fmt.Errorf("encode config: %w", err))
		}
		resp.Info = map[string]string{"config": string(b)}
	}
	return resp, nil
}

func (s *RuntimeServer) RuntimeConfig(context.Context, *runtimeapi.RuntimeConfigRequest) (*runtimeapi.RuntimeConfigResponse, error) {
	driver := runtimeapi.CgroupDriver_CGROUPFS
	if s.opts.CgroupDriver == "systemd" {
		driver = runtimeapi.CgroupDriver_SYSTEMD
	}
	return &runtimeapi.RuntimeConfigResponse{Linux: &runtimeapi.LinuxRuntimeConfiguration{CgroupDriver: driver}}, nil
}

// UpdateRuntimeConfig accepts the pod CIDR the kubelet sends; the CNI
// configuration, not huskd, decides pod addresses.
func (s *RuntimeServer) UpdateRuntimeConfig(context.Context, *runtimeapi.UpdateRuntimeConfigRequest) (*runtimeapi.UpdateRuntimeConfigResponse, error) {
	return &runtimeapi.UpdateRuntimeConfigResponse{}, nil
}

func (s *RuntimeServer) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	id, err := s.opts.Sandboxes.Run(ctx, req.GetConfig(), req.GetRuntimeHandler())
	if err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: id}, nil
}

// StopPodSandbox stops the pod's containers, then its sandbox. The sandbox
// and container managers know nothing of each other: the steps that span
// both are driven here. Unknown IDs succeed, as the CRI requires.
func (s *RuntimeServer) StopPodSandbox(ctx context.Context, req *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	if _, err := s.stopPod(ctx, req.GetPodSandboxId()); err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.StopPodSandboxResponse{}, nil
}

// RemovePodSandbox stops the pod as StopPodSandbox does, then removes its
// containers and their monitor, then the sandbox.
func (s *RuntimeServer) RemovePodSandbox(ctx context.Context, req *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	id, err := s.stopPod(ctx, req.GetPodSandboxId())
	if err != nil {
		return nil, toStatus(fmt.Errorf("remove: %w", err))
	}
	if id == "" {
		return &runtimeapi.RemovePodSandboxResponse{}, nil
	}
	if err := s.opts.Containers.RemoveSandbox(ctx, id); err != nil {
		return nil, toStatus(fmt.Errorf("sandbox %s: remove containers: %w", id, err))
	}
	if err := s.opts.Sandboxes.Remove(ctx, id); err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.RemovePodSandboxResponse{}, nil
}

// stopPod stops the containers of the sandbox id names (in full or by a
// unique prefix), then the sandbox, and returns its full ID; empty, with
// nothing done, when no sandbox has that ID.
func (s *RuntimeServer) stopPod(ctx context.Context, id string) (string, error) {
	full, err := s.opts.Sandboxes.ID(id)
	if errdefs.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if err := s.opts.Containers.StopSandbox(ctx, full); err != nil {
		return "", fmt.Errorf("sandbox %s: stop containers: %w", full, err)
	}
	// The record before the stop, which releases the netns path.
	rec, _, getErr := s.opts.Sandboxes.Get(full)
	if err := s.opts.Sandboxes.Stop(ctx, full); err != nil {
		return "", err
	}
	if getErr == nil {
		s.forgetPodStats(rec)
	}
	return full, nil
}

// PodSandboxStatus reports the sandbox with its containers' statuses and
// the time they were read, which is what the kubelet's evented PLEG uses
// instead of asking for each container.
func (s *RuntimeServer) PodSandboxStatus(_ context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	resp, err := s.podStatus(req.GetPodSandboxId(), req.GetVerbose())
	if err != nil {
		return nil, toStatus(err)
	}
	return resp, nil
}

// podStatus reads a sandbox's status and its containers' from the
// published snapshots, waiting behind no lock. The timestamp is taken
// first, so what is read is at least as new as it says: the kubelet orders
// the statuses of a pod by it.
func (s *RuntimeServer) podStatus(id string, verbose bool) (*runtimeapi.PodSandboxStatusResponse, error) {
	at := time.Now().UnixNano()
	st, info, err := s.opts.Sandboxes.Status(id, verbose)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.PodSandboxStatusResponse{
		Status: st, Info: info, ContainersStatuses: s.opts.Containers.SandboxStatuses(st.Id), Timestamp: at,
	}, nil
}

// sandboxIDs lists the sandboxes there are, for the event hub.
func (s *RuntimeServer) sandboxIDs() []string {
	var out []string
	for _, p := range s.opts.Sandboxes.List(nil) {
		out = append(out, p.Id)
	}
	return out
}

// UpdatePodSandboxResources records the pod's resources after an in-place
// resize (internal/sandbox/resources.go says what is done with them).
func (s *RuntimeServer) UpdatePodSandboxResources(_ context.Context, req *runtimeapi.UpdatePodSandboxResourcesRequest) (*runtimeapi.UpdatePodSandboxResourcesResponse, error) {
	if err := s.opts.Sandboxes.UpdateResources(req.GetPodSandboxId(), req.GetOverhead(), req.GetResources()); err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.UpdatePodSandboxResourcesResponse{}, nil
}

func (s *RuntimeServer) ListPodSandbox(_ context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	items, err := s.listPodSandboxes(req.GetFilter())
	if err != nil {
		return nil, toStatus(err)
	}
	return withItems(&runtimeapi.ListPodSandboxResponse{}, "items", items), nil
}

// listPodSandboxes validates the filter and lists the encoded items, for
// ListPodSandbox and StreamPodSandboxes.
func (s *RuntimeServer) listPodSandboxes(f *runtimeapi.PodSandboxFilter) ([][]byte, error) {
	if st := f.GetState(); st != nil {
		if _, ok := runtimeapi.PodSandboxState_name[int32(st.GetState())]; !ok {
			return nil, fmt.Errorf("filter.state: unknown state %d: %w", st.GetState(), errdefs.ErrInvalidArgument)
		}
	}
	return s.opts.Sandboxes.ListEncoded(f)
}
