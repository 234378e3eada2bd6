// Package proc identifies processes for good and follows their exits. A
// PID alone names a process only until it is reused, and a process of an
// earlier boot not at all: an Identity adds the process's start time and
// the boot ID. A Watcher holds each watched process by a pidfd, which
// signals and waits race-free against PID reuse, whether or not huskd is
// the parent (after a daemon restart it is not).
package proc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ErrGone means the process is not there: it exited (and may be a zombie
// nobody reaped yet), its PID names another process now, or it belongs to
// an earlier boot.
var ErrGone = errors.New("process is gone")

// bootIDFile holds this boot's random ID.
const bootIDFile = "/proc/sys/kernel/random/boot_id"

// BootID returns this boot's ID; empty if the kernel does not say.
func BootID() string {
	b, _ := os.ReadFile(bootIDFile)
	return strings.TrimSpace(string(b))
}

// Identity names one process across PID reuse and reboots.
type Identity struct {
	PID int
	// Start is the process's start time in clock ticks after boot
	// (field 22 of /proc/PID/stat).
	Start uint64
	// BootID is the boot the process ran in.
	BootID string
}

// Self returns pid's identity now; ErrGone when it has exited.
func Self(pid int) (Identity, error) {
	start, err := StartTime(pid)
	if err != nil {
		return Identity{}, err
	}
	return Identity{PID: pid, Start: start, BootID: BootID()}, nil
}

// StartTime returns the start time of pid in clock ticks after boot. A
// process that has exited and is not reaped yet (a zombie waiting for its
// parent) is ErrGone: it must not pass for alive.
func StartTime(pid int) (uint64, error) {
	start, state, err := stat(pid)
	if err != nil {
		return 0, err
	}
	if state == 'Z' || state == 'X' {
		return 0, fmt.Errorf("process %d has exited: %w", pid, ErrGone)
	}
	return start, nil
}

// Alive tells whether id's process still runs: this boot, same PID, same
// start time, not exited.
func Alive(id Identity) bool {
	if id.PID <= 0 || id.Start == 0 || id.BootID != BootID() {
		return false
	}
	start, err := StartTime(id.PID)
	return err == nil && start == id.Start
}

// stat reads the start time and the state of pid, zombies included.
func stat(pid int) (start uint64, state byte, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, os.ErrNotExist) {
		return 0, 0, fmt.Errorf("process %d: %w", pid, ErrGone)
	}
	if err != nil {
		return 0, 0, err
	}
	// The command name may hold spaces and parentheses: fields start after
	// the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	fields := strings.Fields(string(b[i+1:]))
	// fields[0] is field 3 (state); start time is field 22.
	if len(fields) < 20 || len(fields[0]) != 1 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(fields))
	}
	start, err = strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return start, fields[0][0], nil
}
