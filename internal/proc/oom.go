package proc

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ClampOOMScoreAdj returns the lowest oom_score_adj at or above want that
// this process may hand to its children (the runtime writes it in the
// child). Lowering it below this process's own value needs
// CAP_SYS_RESOURCE; without it the runtime fails to start the process
// ("failed to update /proc/self/oom_score_adj: Permission denied"), so
// clamp instead, as containerd's restrict_oom_score_adj does.
func ClampOOMScoreAdj(want int) int {
	if hasCapSysResource() {
		return want
	}
	b, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return want
	}
	cur, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || cur <= want {
		return want
	}
	return cur
}

func hasCapSysResource() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[0].Effective&(1<<unix.CAP_SYS_RESOURCE) != 0
}
