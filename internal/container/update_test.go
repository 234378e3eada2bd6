package container

import (
	"errors"
	"testing"
)

// What runc and crun answer when the v1 kernel refuses a memory limit it
// cannot reclaim down to (seen on this project's test machines).
func TestMemoryBusy(t *testing.T) {
	for msg, want := range map[string]bool{
		`exit status 1: time="..." level=warning msg="Setting back cgroup configs failed due to error: unable to set memory limit to 16777216 (current usage: 42323968, peak usage: 42872832), your state.json and actual configs might be inconsistent."`: true,
		"exit status 1: writing file `memory.limit_in_bytes`: Device or resource busy": true,
		"exit status 1: container does not exist":                                      false,
	} {
		if got := memoryBusy(errors.New(msg)); got != want {
			t.Errorf("memoryBusy(%q) = %v", msg, got)
		}
	}
}
