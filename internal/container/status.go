package container

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/monitor"
)

func criState(s State) runtimeapi.ContainerState {
	switch s {
	case StateCreated:
		return runtimeapi.ContainerState_CONTAINER_CREATED
	case StateRunning:
		return runtimeapi.ContainerState_CONTAINER_RUNNING
	case StateExited:
		return runtimeapi.ContainerState_CONTAINER_EXITED
	}
	return runtimeapi.ContainerState_CONTAINER_UNKNOWN
}

// Status is ContainerStatus; info carries the PID and the OCI spec when
// verbose.
func (m *Manager) Status(id string, verbose bool) (*runtimeapi.ContainerStatus, map[string]string, error) {
	c, err := m.index.Get(id)
	if err != nil {
		return nil, nil, err
	}
	v := c.view()
	st := status(v, c.config)
	if !verbose {
		return st, nil, nil
	}
	spec, _ := readSpec(m.bundleDir(v.ID))
	b, err := json.Marshal(map[string]any{
		"pid": v.PID, "sandboxID": v.SandboxID, "runtimeHandler": v.Handler, "cgroupsPath": v.CgroupsPath,
		"config": c.config, "runtimeSpec": spec,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("container %s: encode info: %w", v.ID, err)
	}
	return st, map[string]string{"info": string(b)}, nil
}

// SandboxStatuses are the statuses of a sandbox's containers, oldest
// first, as PodSandboxStatus and the evented PLEG's events carry them.
// They come from the published snapshots: no container's lock is taken.
func (m *Manager) SandboxStatuses(sandboxID string) []*runtimeapi.ContainerStatus {
	var out []*runtimeapi.ContainerStatus
	for _, c := range m.index.All() {
		if v := c.view(); v.SandboxID == sandboxID && v.State != StateCreating {
			out = append(out, status(v, c.config))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt < out[j].CreatedAt })
	return out
}

// status is a container's CRI status as its snapshot v says.
func status(v *Record, cfg *runtimeapi.ContainerConfig) *runtimeapi.ContainerStatus {
	st := &runtimeapi.ContainerStatus{
		Id:          v.ID,
		Metadata:    cfg.GetMetadata(),
		State:       criState(v.State),
		CreatedAt:   v.CreatedAt,
		StartedAt:   v.StartedAt,
		FinishedAt:  v.FinishedAt,
		ExitCode:    v.ExitCode,
		Image:       &runtimeapi.ImageSpec{Image: v.ImageName, Annotations: cfg.GetImage().GetAnnotations(), UserSpecifiedImage: userImage(cfg)},
		ImageRef:    v.ImageID,
		ImageId:     v.ImageID,
		Reason:      v.Reason,
		Message:     v.Message,
		Labels:      cfg.GetLabels(),
		Annotations: cfg.GetAnnotations(),
		LogPath:     v.LogPath,
		Resources:   &runtimeapi.ContainerResources{Linux: decodeResources(v.Resources)},
		User: &runtimeapi.ContainerUser{Linux: &runtimeapi.LinuxContainerUser{
			Uid: int64(v.UID), Gid: int64(v.GID), SupplementalGroups: groups(v),
		}},
		StopSignal: criSignal(v.StopSignal),
	}
	for i, mnt := range cfg.GetMounts() {
		st.Mounts = append(st.Mounts, statusMount(mnt, i, v))
	}
	return st
}

// userImage is the image as the user named it: the kubelet's
// user_specified_image (it creates from the image ID), else the image asked.
func userImage(cfg *runtimeapi.ContainerConfig) string {
	if u := cfg.GetImage().GetUserSpecifiedImage(); u != "" {
		return u
	}
	return cfg.GetImage().GetImage()
}

func groups(v *Record) []int64 {
	out := []int64{int64(v.GID)}
	for _, g := range v.Groups {
		if g != v.GID {
			out = append(out, int64(g))
		}
	}
	return out
}

func readSpec(bundle string) (json.RawMessage, error) {
	b, err := os.ReadFile(bundle + "/config.json")
	if err != nil {
		return nil, err
	}
	return json.RawMessage(b), nil
}

// List is ListContainers with the CRI filter: id (or unique prefix), state,
// sandbox ID and label selector.
func (m *Manager) List(f *runtimeapi.ContainerFilter) []*runtimeapi.Container {
	var out []*runtimeapi.Container
	for _, x := range m.matching(f) {
		out = append(out, listItem(x.v, x.c.config))
	}
	return out
}

// ListEncoded is List with each item in its protobuf encoding. A
// container's is kept until its record changes (a new snapshot): the
// kubelet relists every second, and encoding the same items again, their
// labels and annotations above all, was most of the call.
func (m *Manager) ListEncoded(f *runtimeapi.ContainerFilter) ([][]byte, error) {
	list := m.matching(f)
	out := make([][]byte, len(list))
	for i, x := range list {
		b, err := x.c.encodedItem(x.v)
		if err != nil {
			return nil, fmt.Errorf("container %s: encode: %w", x.v.ID, err)
		}
		out[i] = b
	}
	return out, nil
}

// listed is a container's ListContainers item in its protobuf encoding,
// made from the snapshot snap.
type listed struct {
	snap *Record
	b    []byte
}

// encodedItem is the encoding of the container's item as its snapshot v
// says, made once per snapshot.
func (c *Container) encodedItem(v *Record) ([]byte, error) {
	if l := c.listed.Load(); l != nil && l.snap == v {
		return l.b, nil
	}
	b, err := proto.Marshal(listItem(v, c.config))
	if err != nil {
		return nil, err
	}
	c.listed.Store(&listed{snap: v, b: b})
	return b, nil
}

// match is a container that a filter matched, with the snapshot it was
// matched on.
type match struct {
	c *Container
	v *Record
}

// matching lists the containers the filter matches, oldest first.
func (m *Manager) matching(f *runtimeapi.ContainerFilter) []match {
	var out []match
	for _, c := range m.index.All() {
		v := c.view()
		if v.State == StateCreating ||
			(f.GetId() != "" && !strings.HasPrefix(v.ID, f.GetId())) ||
			(f.GetPodSandboxId() != "" && !strings.HasPrefix(v.SandboxID, f.GetPodSandboxId())) ||
			(f.GetState() != nil && f.GetState().GetState() != criState(v.State)) ||
			!labelsMatch(c.config.GetLabels(), f.GetLabelSelector()) {
			continue
		}
		out = append(out, match{c, v})
	}
	slices.SortFunc(out, func(a, b match) int { return cmp.Compare(a.v.CreatedAt, b.v.CreatedAt) })
	return out
}

func labelsMatch(labels, selector map[string]string) bool {
	for k, want := range selector {
		if got, ok := labels[k]; !ok || got != want {
			return false
		}
	}
	return true
}

// listItem is a container as ListContainers shows it.
func listItem(v *Record, cfg *runtimeapi.ContainerConfig) *runtimeapi.Container {
	return &runtimeapi.Container{
		Id: v.ID, PodSandboxId: v.SandboxID, Metadata: cfg.GetMetadata(),
		Image:    &runtimeapi.ImageSpec{Image: v.ImageName, UserSpecifiedImage: userImage(cfg)},
		ImageRef: v.ImageID, ImageId: v.ImageID, State: criState(v.State), CreatedAt: v.CreatedAt,
		Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations(),
	}
}

// Monitors counts the pod monitors that answer: one per pod that has had a
// container, until RemovePodSandbox ends it. Each is asked over its
// socket, so a monitor that died is not counted.
func (m *Manager) Monitors(ctx context.Context) int {
	ents, err := os.ReadDir(filepath.Join(m.opts.StateDir, "monitors"))
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		if monitor.For(filepath.Join(m.opts.StateDir, "monitors", e.Name())).Ping(ctx) == nil {
			n++
		}
		cancel()
	}
	return n
}
