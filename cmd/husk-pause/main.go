// Command husk-pause is the infra process of a husk pod: it holds the pod's
// namespaces and, as PID 1 of a shared PID namespace, reaps zombies. It is a
// port of Kubernetes' pause.c (build/pause/linux/pause.c).
//
// Exit codes, as pause.c documents them: 0 on SIGINT or SIGTERM; 1, 2, 3
// when the SIGINT, SIGTERM or SIGCHLD handler cannot be installed; 42 if the
// wait loop ever ends. In Go, handlers are installed by the runtime's
// signal.Notify, which cannot fail, so 1/2/3 are kept only as documented
// codes: they cannot occur. Go installs its handlers without SA_NOCLDSTOP, so
// a child that stops or continues does wake the loop: it then finds nothing
// to reap (WNOHANG without WUNTRACED/WCONTINUED) and sleeps again, which is
// the same outcome pause.c gets.
//
// Why os/signal, though it costs two threads (5 instead of 3): taking the
// signals with rt_sigtimedwait on the main thread was tried and is racy.
// Go unblocks SIGINT, SIGTERM and SIGCHLD on every runtime thread, and a
// process-directed signal pending for the process is taken by whichever
// unblocked thread next returns to user space (often sysmon), so the Go
// runtime's default handling (death by signal, SIGCHLD dropped) wins the
// race under load; the PID-1 reaping test caught it.
package main

import (
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"

	"golang.org/x/sys/unix"
)

// version is set with -ldflags "-X main.version=...".
var version = "dev"

const (
	exitSigint  = 1 // SIGINT handler not installed (cannot occur in Go)
	exitSigterm = 2 // SIGTERM handler not installed (cannot occur in Go)
	exitSigchld = 3 // SIGCHLD handler not installed (cannot occur in Go)
	exitLoopEnd = 42
)

var _ = [...]int{exitSigint, exitSigterm, exitSigchld}

func main() {
	// Paid per pod: one P, and no GC work for the little this process
	// allocates.
	runtime.GOMAXPROCS(1)
	debug.SetGCPercent(-1)

	if len(os.Args) > 1 && os.Args[1] == "-v" {
		os.Stdout.WriteString("husk-pause " + version + "\n")
		os.Exit(0)
	}
	if os.Getpid() != 1 {
		os.Stderr.WriteString("Warning: husk-pause should be the first process\n")
	}

	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGCHLD)
	for sig := range sigs {
		switch sig {
		case unix.SIGINT, unix.SIGTERM:
			os.Exit(0)
		case unix.SIGCHLD:
			reap()
		}
	}
	os.Exit(exitLoopEnd)
}

// reap collects every exited child: signals coalesce, so one SIGCHLD may
// stand for many exits.
func reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
