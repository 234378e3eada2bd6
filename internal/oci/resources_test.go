package oci

import (
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestValidateResources(t *testing.T) {
	tests := []struct {
		name  string
		r     *runtimeapi.LinuxContainerResources
		field string // "" = valid
	}{
		{"nil", nil, ""},
		{"empty", &runtimeapi.LinuxContainerResources{}, ""},
		{"what the kubelet sends", &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 50000, CpuShares: 512,
			MemoryLimitInBytes: 128 << 20, OomScoreAdj: -997, CpusetCpus: "0-1,3", Unified: map[string]string{"memory.oom.group": "1"}}, ""},
		{"unlimited quota", &runtimeapi.LinuxContainerResources{CpuQuota: -1}, ""},
		{"period too short", &runtimeapi.LinuxContainerResources{CpuPeriod: 999}, "cpu_period"},
		{"period too long", &runtimeapi.LinuxContainerResources{CpuPeriod: 1000001}, "cpu_period"},
		{"quota too small", &runtimeapi.LinuxContainerResources{CpuQuota: 500}, "cpu_quota"},
		{"negative quota", &runtimeapi.LinuxContainerResources{CpuQuota: -2}, "cpu_quota"},
		{"shares of one", &runtimeapi.LinuxContainerResources{CpuShares: 1}, "cpu_shares"},
		{"negative memory", &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: -1}, "memory_limit_in_bytes"},
		{"swap below -1", &runtimeapi.LinuxContainerResources{MemorySwapLimitInBytes: -2}, "memory_swap_limit_in_bytes"},
		{"oom score", &runtimeapi.LinuxContainerResources{OomScoreAdj: 1001}, "oom_score_adj"},
		{"cpuset", &runtimeapi.LinuxContainerResources{CpusetCpus: "3-1"}, "cpuset_cpus"},
		{"cpuset mems", &runtimeapi.LinuxContainerResources{CpusetMems: "a"}, "cpuset_mems"},
		{"hugepage size", &runtimeapi.LinuxContainerResources{HugepageLimits: []*runtimeapi.HugepageLimit{{Limit: 1}}}, "hugepage_limits[0].page_size"},
		{"unified path", &runtimeapi.LinuxContainerResources{Unified: map[string]string{"../memory.max": "1"}}, "unified key"},
	}
	for _, tt := range tests {
		err := ValidateResources(tt.r)
		switch {
		case tt.field == "" && err != nil:
			t.Errorf("%s: refused: %v", tt.name, err)
		case tt.field != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.field+" ")):
			t.Errorf("%s: error %v, want one naming %s", tt.name, err, tt.field)
		}
	}
}
