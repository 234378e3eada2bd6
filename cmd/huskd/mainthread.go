package main

import "runtime"

// init locks the main goroutine to the main thread, so that no other
// goroutine ever runs on it. huskd moves threads into pods' network
// namespaces (internal/netns) and lets the runtime end them afterwards;
// the runtime cannot end the main thread, and parks it for good instead,
// still inside the pod's namespace: /proc/<huskd>/ns/net then names a
// removed pod, which lives on (issue 16). Locking in init keeps main on
// that thread for the process's life (see runtime.LockOSThread); the main
// goroutine spends it blocked, so the cost is one idle thread.
func init() {
	runtime.LockOSThread()
}
