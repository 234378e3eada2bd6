package main

import (
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

var sigs = make(chan os.Signal, 16)

// installHandlers uses os/signal: this is the path with the Go runtime
// (see entry_amd64.s for the one without). Notify
// cannot fail, so exit codes 1-3 cannot occur here; Go installs its
// handlers without SA_NOCLDSTOP, so a stopped child wakes the loop, which
// then finds nothing to reap (WNOHANG without WUNTRACED) and sleeps again.
func installHandlers() int {
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGCHLD)
	return 0
}

func waitForever() {
	for sig := range sigs {
		switch sig {
		case unix.SIGINT, unix.SIGTERM:
			os.Exit(0)
		case unix.SIGCHLD:
			for {
				pid, err := unix.Wait4(-1, nil, unix.WNOHANG, nil)
				if err == unix.EINTR {
					continue
				}
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}
