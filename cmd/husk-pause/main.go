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
//     installed, 42 if the wait loop ever ends;
//   - -infra (husk's infra start without an OCI runtime): first run the setup
//     program read on fd 3 (internal/pausesetup), which puts the process in
//     the pod's namespaces and read-only root and drops its privileges.
//
// It is paid per pod: on amd64 the Makefile builds it with
// -ldflags=-E=main.entry, an entry point in assembly that never starts the
// Go runtime (entry_amd64.s): one thread, and a few pages of memory of its
// own, as pause.c. main below is the portable fallback, used on other
// architectures (where husk starts the infra through the OCI runtime) and
// by a plain go build: the same behaviour through os/signal, without the
// setup, which needs a process without the Go runtime's threads.
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
	if len(os.Args) > 1 && os.Args[1] == infraFlag {
		os.Stderr.WriteString("husk-pause: " + infraFlag + " needs the assembly entry point (amd64, -ldflags=-E=main.entry)\n")
		os.Exit(exitBadProgram)
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
