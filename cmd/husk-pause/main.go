// Command husk-pause is the infra process of a husk pod: it holds the pod's
// namespaces and, as PID 1 of a shared PID namespace, reaps zombies. It is a
// port of Kubernetes' pause.c (build/pause/linux/pause.c):
//
//   - SIGINT and SIGTERM exit 0;
//   - SIGCHLD reaps every exited child, waitpid(-1, WNOHANG) in a loop, and
//     the handler is installed with SA_NOCLDSTOP, so stopped or continued
//     children do not wake it;
//   - -v prints the version; not being PID 1 prints a warning;
//   - exit 1, 2 or 3 when the SIGINT, SIGTERM or SIGCHLD handler cannot be
//     installed, 42 if the wait loop ever ends.
//
// It is paid per pod, so on amd64 it does what pause.c does: it installs
// its own handlers with rt_sigaction (tiny assembly functions, see
// signals_amd64.s) and sleeps in pause(2). The Go runtime never sees these
// signals, so none of os/signal's machinery runs: 3 threads instead of 5-6,
// and less memory. Other architectures use os/signal (signals_other.go).
package main

import (
	"os"
	"runtime"
)

// version is set with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes, from pause.c.
const (
	exitSigint  = 1
	exitSigterm = 2
	exitSigchld = 3
	exitLoopEnd = 42
)

func main() {
	// husk also sets GOMAXPROCS=1 in the infra's environment, which saves
	// the resize here. No debug.SetGCPercent: it allocates too little for
	// a GC to start, and the call itself costs a thread.
	runtime.GOMAXPROCS(1)

	if len(os.Args) > 1 && os.Args[1] == "-v" {
		os.Stdout.WriteString("husk-pause " + version + "\n")
		os.Exit(0)
	}
	if os.Getpid() != 1 {
		os.Stderr.WriteString("Warning: husk-pause should be the first process\n")
	}
	if code := installHandlers(); code != 0 {
		os.Exit(code)
	}
	waitForever()
	os.Stderr.WriteString("Error: infinite loop terminated\n")
	os.Exit(exitLoopEnd)
}
