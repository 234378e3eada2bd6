package main

import (
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// reapOrphans reaps zombies among huskd's children that nobody waits for.
// huskd is a child subreaper so that infra processes come back to it, but
// so does anything else orphaned below it (a runc init whose runc died).
// The infra processes are reaped by the sandbox watcher as they exit, and
// os/exec reaps its own children the moment they exit, so a child that is
// still a zombie on two scans in a row belongs to nobody: reaping it by PID
// cannot take an exit status someone else waits for.
func reapOrphans(log *slog.Logger, every time.Duration, stop <-chan struct{}) {
	seen := map[int]bool{}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		now := map[int]bool{}
		for _, pid := range zombieChildren() {
			if !seen[pid] {
				now[pid] = true
				continue
			}
			var ws unix.WaitStatus
			if got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); err == nil && got == pid {
				log.Debug("reaped orphan", "pid", pid)
			}
		}
		seen = now
	}
}

// zombieChildren lists huskd's children in state Z.
func zombieChildren() []int {
	tasks, _ := os.ReadDir("/proc/self/task")
	var out []int
	for _, task := range tasks {
		b, _ := os.ReadFile("/proc/self/task/" + task.Name() + "/children")
		for _, f := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				continue
			}
			stat, err := os.ReadFile("/proc/" + f + "/stat")
			if err != nil {
				continue
			}
			s := string(stat)
			if i := strings.LastIndexByte(s, ')'); i > 0 && i+2 < len(s) && s[i+2] == 'Z' {
				out = append(out, pid)
			}
		}
	}
	return out
}
