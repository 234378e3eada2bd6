package container

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/oci"
	"github.com/huskrt/husk/internal/stats"
)

// Update applies new resources to a created or running container and
// remembers them for ContainerStatus. A memory limit below what the
// container uses is refused, whatever the cgroup version (see
// checkMemoryLimit).
func (m *Manager) Update(ctx context.Context, id string, r *runtimeapi.LinuxContainerResources) error {
	c, err := m.index.Get(id)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	rec := &c.rec
	if rec.State != StateCreated && rec.State != StateRunning {
		return fmt.Errorf("container %s is %s: %w", rec.ID, strings.ToLower(string(rec.State)), errdefs.ErrFailedPrecondition)
	}
	if r == nil {
		return nil
	}
	if err := oci.ValidateResources(r); err != nil {
		return fmt.Errorf("container %s: update resources: %v: %w", rec.ID, err, errdefs.ErrInvalidArgument)
	}
	if err := checkMemoryLimit(rec, r.GetMemoryLimitInBytes()); err != nil {
		return err
	}
	// Keep what was not updated.
	cur := decodeResources(rec.Resources)
	if cur == nil {
		cur = &runtimeapi.LinuxContainerResources{}
	}
	mergeResources(cur, r)
	if err := m.applyResources(ctx, rec, r, cur); err != nil {
		return err
	}
	rec.Resources, _ = json.Marshal(cur)
	return m.persistLocked(c)
}

// applyResources has the runtime write r to the container's cgroup; a
// container not yet in the runtime gets all its resources (merged) in its
// spec. A v1 kernel that cannot reclaim enough to fit a lower memory limit
// refuses it (EBUSY; runc says "unable to set memory limit ... current
// usage"): that is the container's state, not a failure of the runtime.
func (m *Manager) applyResources(ctx context.Context, rec *Record, r, merged *runtimeapi.LinuxContainerResources) error {
	if !rec.RuntimeCreated {
		return m.updateBundle(rec, merged)
	}
	rt, err := m.opts.Runtimes.Get(rec.Handler)
	if err != nil {
		return err
	}
	res := &specs.LinuxResources{}
	oci.UpdateResources(res, r)
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	f := filepath.Join(m.bundleDir(rec.ID), "resources.json")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		return fmt.Errorf("container %s: update: %w", rec.ID, err)
	}
	err = rt.Update(context.WithoutCancel(ctx), rec.ID, f)
	if err != nil && r.GetMemoryLimitInBytes() > 0 && memoryBusy(err) {
		return fmt.Errorf("container %s: memory limit %d bytes refused by the kernel, which could not reclaim the container's memory to fit it: %w: %w",
			rec.ID, r.GetMemoryLimitInBytes(), err, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return fmt.Errorf("container %s: update resources: %w", rec.ID, err)
	}
	return nil
}

// updateBundle writes the resources r into the spec of a container the
// runtime has not made yet (CREATED: StartContainer runs it from its
// bundle), as the kubelet's CPU manager asks between CreateContainer and
// StartContainer.
func (m *Manager) updateBundle(rec *Record, r *runtimeapi.LinuxContainerResources) error {
	path := filepath.Join(m.bundleDir(rec.ID), "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("container %s: update: %w", rec.ID, err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return fmt.Errorf("container %s: update: spec: %w", rec.ID, err)
	}
	if spec.Linux == nil {
		spec.Linux = &specs.Linux{}
	}
	if spec.Linux.Resources == nil {
		spec.Linux.Resources = &specs.LinuxResources{}
	}
	if len(r.GetHugepageLimits()) > 0 {
		spec.Linux.Resources.HugepageLimits = nil // UpdateResources appends them
	}
	oci.UpdateResources(spec.Linux.Resources, r)
	if b, err = json.Marshal(&spec); err != nil {
		return fmt.Errorf("container %s: update: spec: %w", rec.ID, err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("container %s: update: %w", rec.ID, err)
	}
	return nil
}

func memoryBusy(err error) bool {
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "unable to set memory limit") || strings.Contains(s, "device or resource busy")
}

// checkMemoryLimit refuses a memory limit below the container's working
// set (its usage less the inactive page cache, the figure ContainerStats
// reports and the kubelet evicts on). runc on cgroup v1 refuses such a
// limit only when the kernel cannot reclaim enough, and on v2 the kernel
// takes it and OOM-kills the container; refusing it first, with the
// figures, gives the kubelet's in-place resize the same answer on both.
func checkMemoryLimit(rec *Record, limit int64) error {
	if limit <= 0 {
		return nil
	}
	inUse, err := memoryInUse(rec.CgroupsPath)
	if err != nil {
		// No cgroup to read (a runtime that has not made it yet): the
		// runtime decides.
		return nil
	}
	if uint64(limit) < inUse {
		return fmt.Errorf("container %s: memory limit %d bytes is below its current memory usage of %d bytes (working set): %w",
			rec.ID, limit, inUse, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// memoryInUse is the working set of the cgroup at cgroupsPath.
func memoryInUse(cgroupsPath string) (uint64, error) {
	cg, err := stats.ReadCgroup(cgroupsPath)
	if err != nil {
		return 0, err
	}
	return cg.Memory.WorkingSet, nil
}
func mergeResources(cur, r *runtimeapi.LinuxContainerResources) {
	if r.CpuPeriod != 0 {
		cur.CpuPeriod = r.CpuPeriod
	}
	if r.CpuQuota != 0 {
		cur.CpuQuota = r.CpuQuota
	}
	if r.CpuShares != 0 {
		cur.CpuShares = r.CpuShares
	}
	if r.MemoryLimitInBytes != 0 {
		cur.MemoryLimitInBytes = r.MemoryLimitInBytes
	}
	if r.CpusetCpus != "" {
		cur.CpusetCpus = r.CpusetCpus
	}
	if r.CpusetMems != "" {
		cur.CpusetMems = r.CpusetMems
	}
	if r.OomScoreAdj != 0 {
		cur.OomScoreAdj = r.OomScoreAdj
	}
	if len(r.HugepageLimits) > 0 {
		cur.HugepageLimits = r.HugepageLimits
	}
	if len(r.Unified) > 0 {
		cur.Unified = r.Unified
	}
	if r.MemorySwapLimitInBytes != 0 {
		cur.MemorySwapLimitInBytes = r.MemorySwapLimitInBytes
	}
}
