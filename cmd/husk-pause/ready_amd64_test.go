package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// waitReady waits until husk-pause's main goroutine sleeps in pause(2),
// on whichever thread runs it: its signal handlers are installed by then
// (main installs them first).
func waitReady(t *testing.T, pid int) {
	t.Helper()
	want := strconv.Itoa(unix.SYS_PAUSE)
	var got []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		got = nil
		tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/syscall", pid))
		if err != nil || len(tasks) == 0 {
			t.Fatalf("husk-pause %d: no tasks (%v)", pid, err)
		}
		for _, task := range tasks {
			b, _ := os.ReadFile(task)
			nr := strings.Fields(string(b) + " ")[0]
			if nr == want {
				return
			}
			got = append(got, nr)
		}
	}
	t.Fatalf("husk-pause %d not in pause(2) after 10s (its threads are in syscalls %v)", pid, got)
}
