package sandbox

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
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
	for _, x := range m.matching(filter) {
		out = append(out, listItem(x.v, x.sb.config))
	}
	return out
}

// ListEncoded is List with each item in its protobuf encoding. A
// sandbox's is kept until its record changes (a new snapshot): the
// kubelet relists every second, and encoding the same items again, their
// labels and annotations above all, was most of the call.
func (m *Manager) ListEncoded(filter *runtimeapi.PodSandboxFilter) ([][]byte, error) {
	list := m.matching(filter)
	out := make([][]byte, len(list))
	for i, x := range list {
		b, err := x.sb.encodedItem(x.v)
		if err != nil {
			return nil, fmt.Errorf("pod sandbox %s: encode: %w", x.v.ID, err)
		}
		out[i] = b
	}
	return out, nil
}

// listed is a sandbox's ListPodSandbox item in its protobuf encoding,
// made from the snapshot snap.
type listed struct {
	snap *Record
	b    []byte
}

// encodedItem is the encoding of the sandbox's item as its snapshot v
// says, made once per snapshot.
func (sb *Sandbox) encodedItem(v *Record) ([]byte, error) {
	if l := sb.listed.Load(); l != nil && l.snap == v {
		return l.b, nil
	}
	b, err := proto.Marshal(listItem(v, sb.config))
	if err != nil {
		return nil, err
	}
	sb.listed.Store(&listed{snap: v, b: b})
	return b, nil
}

// match is a sandbox that a filter matched, with the snapshot it was
// matched on.
type match struct {
	sb *Sandbox
	v  *Record
}

// matching lists the sandboxes the filter matches, oldest first.
func (m *Manager) matching(filter *runtimeapi.PodSandboxFilter) []match {
	var out []match
	for _, sb := range m.index.All() {
		v := sb.view()
		if v.State == StateCreating ||
			(filter.GetId() != "" && !strings.HasPrefix(v.ID, filter.GetId())) ||
			(filter.GetState() != nil && filter.GetState().GetState() != criState(v.State)) ||
			!labelsMatch(sb.config.GetLabels(), filter.GetLabelSelector()) {
			continue
		}
		out = append(out, match{sb, v})
	}
	slices.SortFunc(out, func(a, b match) int { return cmp.Compare(a.v.CreatedAt, b.v.CreatedAt) })
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
