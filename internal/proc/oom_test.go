package proc

import (
	"os/exec"
	"strconv"
	"testing"
)

// TestClampOOMScoreAdj checks that each clamped value is one a child of
// this process can really set on itself, as the runtime's child does, and
// that it is never below what was asked.
func TestClampOOMScoreAdj(t *testing.T) {
	for _, want := range []int{-1000, -998, -997, 0, 500, 1000} {
		got := ClampOOMScoreAdj(want)
		if got < want {
			t.Errorf("ClampOOMScoreAdj(%d) = %d, below what was asked", want, got)
		}
		if hasCapSysResource() && got != want {
			t.Errorf("ClampOOMScoreAdj(%d) = %d with CAP_SYS_RESOURCE, want it unchanged", want, got)
		}
		out, err := exec.Command("sh", "-c", "echo "+strconv.Itoa(got)+" >/proc/self/oom_score_adj").CombinedOutput()
		if err != nil {
			t.Errorf("ClampOOMScoreAdj(%d) = %d, which a child cannot set: %v: %s", want, got, err, out)
		}
	}
}
