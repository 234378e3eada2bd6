package oci

import (
	"fmt"
	"strconv"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The kernel's bounds for the CFS bandwidth files (microseconds) and the
// v1 CPU weight; 0 leaves each unset, as the CRI means it.
const (
	minCPUPeriod = 1000
	maxCPUPeriod = 1000000
	minCPUQuota  = 1000
	minCPUShares = 2
	maxCPUShares = 262144
)

// ValidateResources checks the CRI resources of an update (a container's
// or a pod's) against what the kernel accepts, so a bad value is refused
// with its field's name rather than half-applied by the runtime. The error
// names the field; callers classify it as an invalid argument.
func ValidateResources(r *runtimeapi.LinuxContainerResources) error {
	bad := func(field string, v any, why string) error {
		return fmt.Errorf("%s %v %s", field, v, why)
	}
	if p := r.GetCpuPeriod(); p != 0 && (p < minCPUPeriod || p > maxCPUPeriod) {
		return bad("cpu_period", p, fmt.Sprintf("is outside [%d, %d] microseconds", minCPUPeriod, maxCPUPeriod))
	}
	if q := r.GetCpuQuota(); q != 0 && q != -1 && q < minCPUQuota {
		return bad("cpu_quota", q, fmt.Sprintf("is below %d microseconds (-1 is unlimited)", minCPUQuota))
	}
	if s := r.GetCpuShares(); s != 0 && (s < minCPUShares || s > maxCPUShares) {
		return bad("cpu_shares", s, fmt.Sprintf("is outside [%d, %d]", minCPUShares, maxCPUShares))
	}
	if m := r.GetMemoryLimitInBytes(); m < 0 {
		return bad("memory_limit_in_bytes", m, "is negative")
	}
	if m := r.GetMemorySwapLimitInBytes(); m < -1 {
		return bad("memory_swap_limit_in_bytes", m, "is below -1 (unlimited)")
	}
	if a := r.GetOomScoreAdj(); a < -1000 || a > 1000 {
		return bad("oom_score_adj", a, "is outside [-1000, 1000]")
	}
	for _, l := range []struct{ field, list string }{{"cpuset_cpus", r.GetCpusetCpus()}, {"cpuset_mems", r.GetCpusetMems()}} {
		if err := validCPUList(l.list); err != nil {
			return bad(l.field, strconv.Quote(l.list), err.Error())
		}
	}
	for i, h := range r.GetHugepageLimits() {
		if h.GetPageSize() == "" {
			return bad(fmt.Sprintf("hugepage_limits[%d].page_size", i), `""`, "is empty")
		}
	}
	for k := range r.GetUnified() {
		if k == "" || strings.ContainsAny(k, "/\x00") || k == "." || k == ".." {
			return bad("unified key", strconv.Quote(k), "is not a cgroup file name")
		}
	}
	return nil
}

// validCPUList checks the kernel's list format ("0-3,6,8-9"); empty is
// unset.
func validCPUList(s string) error {
	if s == "" {
		return nil
	}
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err1 := strconv.ParseUint(lo, 10, 16)
		b, err2 := a, error(nil)
		if isRange {
			b, err2 = strconv.ParseUint(hi, 10, 16)
		}
		if err1 != nil || err2 != nil || b < a {
			return fmt.Errorf("is not a list like 0-3,6 (at %q)", part)
		}
	}
	return nil
}
