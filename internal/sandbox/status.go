package sandbox

import (
	"fmt"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func criState(s State) runtimeapi.PodSandboxState {
	if s == StateReady {
		return runtimeapi.PodSandboxState_SANDBOX_READY
	}
	return runtimeapi.PodSandboxState_SANDBOX_NOTREADY
}

// Status reports a sandbox; verbose adds the info map (JSON under "info").
// It reads the published snapshot, so it never waits behind a slow stop.
// A sandbox still being created is not visible yet.
func (m *Manager) Status(id string, verbose bool) (*runtimeapi.PodSandboxStatus, map[string]string, error) {
	sb, err := m.index.Get(id)
	if err != nil {
		return nil, nil, err
	}
	v := sb.view()
	if v.State == StateCreating {
		return nil, nil, fmt.Errorf("pod sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	cfg := sb.config
	item := listItem(v, cfg)
	st := &runtimeapi.PodSandboxStatus{
		Id:             item.Id,
		Metadata:       item.Metadata,
		State:          item.State,
		CreatedAt:      item.CreatedAt,
		Labels:         item.Labels,
		Annotations:    item.Annotations,
		RuntimeHandler: item.RuntimeHandler,
		Linux: &runtimeapi.LinuxPodSandboxStatus{
			Namespaces: &runtimeapi.Namespace{Options: namespaceOptions(cfg)},
		},
		Network: &runtimeapi.PodSandboxNetworkStatus{},
	}
	if len(v.IPs) > 0 {
		st.Network.Ip = v.IPs[0]
		for _, ip := range v.IPs[1:] {
			st.Network.AdditionalIps = append(st.Network.AdditionalIps, &runtimeapi.PodIP{Ip: ip})
		}
	}
	if !verbose {
		return st, nil, nil
	}
	info, err := m.info(sb, v)
	if err != nil {
		return nil, nil, err
	}
	return st, info, nil
}

// namespaceOptions returns the config's options with the defaults filled
// in, as they were applied.
func namespaceOptions(cfg *runtimeapi.PodSandboxConfig) *runtimeapi.NamespaceOption {
	ns := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	return &runtimeapi.NamespaceOption{
		Network:       ns.GetNetwork(),
		Pid:           ns.GetPid(),
		Ipc:           ns.GetIpc(),
		TargetId:      ns.GetTargetId(),
		UsernsOptions: ns.GetUsernsOptions(),
	}
}

// List returns the sandboxes that match filter (id prefix, state, labels).
func (m *Manager) List(filter *runtimeapi.PodSandboxFilter) []*runtimeapi.PodSandbox {
	var out []*runtimeapi.PodSandbox
	for _, sb := range m.index.All() {
		v := sb.view()
		if v.State == StateCreating {
			continue
		}
		cfg := sb.config
		if f := filter.GetId(); f != "" && !strings.HasPrefix(v.ID, f) {
			continue
		}
		if f := filter.GetState(); f != nil && f.GetState() != criState(v.State) {
			continue
		}
		if !labelsMatch(cfg.GetLabels(), filter.GetLabelSelector()) {
			continue
		}
		out = append(out, listItem(v, cfg))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt < out[j].CreatedAt })
	return out
}

// listItem is a sandbox as ListPodSandbox shows it.
func listItem(v *Record, cfg *runtimeapi.PodSandboxConfig) *runtimeapi.PodSandbox {
	return &runtimeapi.PodSandbox{
		Id:             v.ID,
		Metadata:       cfg.GetMetadata(),
		State:          criState(v.State),
		CreatedAt:      v.CreatedAt,
		Labels:         cfg.GetLabels(),
		Annotations:    cfg.GetAnnotations(),
		RuntimeHandler: v.Handler,
	}
}

func labelsMatch(labels, selector map[string]string) bool {
	for k, want := range selector {
		if got, ok := labels[k]; !ok || got != want {
			return false
		}
	}
	return true
}

// Get returns a sandbox's record copy and config, for the packages that
// build on sandboxes (containers join its namespaces).
func (m *Manager) Get(id string) (Record, *runtimeapi.PodSandboxConfig, error) {
	sb, err := m.index.Get(id)
	if err != nil {
		return Record{}, nil, err
	}
	v := sb.view()
	if v.State == StateCreating {
		return Record{}, nil, fmt.Errorf("pod sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	return *v, sb.config, nil
}

// Dir is the sandbox's runtime directory, holding its resolv.conf,
// hostname and hosts.
func (m *Manager) Dir(id string) string { return m.dir(id) }
