// Package netns runs code inside a network namespace. It is the only place
// in husk that moves a thread into another network namespace: setns and
// unshare change the calling thread only, and in Go the thread under a
// goroutine is the runtime's to share, so the work needs a thread of its
// own, and that thread must never be the process's main thread.
//
// Each call runs its function on a goroutine locked to its OS thread,
// moves the thread back to where it was, and ends that goroutine still
// locked, so the runtime ends the thread rather than hand it to other
// goroutines with whatever state the work left on it. The
// main thread is the exception the runtime cannot end: a goroutine that
// ends locked to it leaves it parked for good, still in the pod's
// namespace, which then outlives the pod, and /proc/<pid>/ns/net of the
// whole process names it (issue 16). So the work never runs there:
// binaries lock their main goroutine to the main thread in init
// (cmd/huskd), and this package steps aside on its own if it lands on the
// main thread anyway (in a test binary, say).
package netns

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Run runs fn on an OS thread of its own moved into the network namespace
// pinned at path (a bind-mounted nsfs file or /proc/<pid>/ns/net). The
// thread is thrown away after fn, so nothing fn leaves on it matters.
func Run(path string, fn func() error) error {
	ns, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("netns %s: %w", path, err)
	}
	defer ns.Close()
	return onOwnThread(func() error {
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter netns %s: %w", path, err)
		}
		return fn()
	})
}

// RunNew runs fn on an OS thread of its own moved into a new network
// namespace, which lives on only if fn pins it (see Self) or moves a
// process into it. The thread is thrown away after fn.
func RunNew(fn func() error) error {
	return onOwnThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare netns: %w", err)
		}
		return fn()
	})
}

// Self is the network namespace of the calling thread, as a path to bind
// mount or open; only meaningful inside Run and RunNew.
func Self() string { return "/proc/thread-self/ns/net" }

// onOwnThread runs fn on a goroutine locked to an OS thread other than the
// main thread, and ends that thread after fn.
func onOwnThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// The main thread: hold it, locked and blocked here, so the
			// goroutine below gets another thread; then give it back as
			// it was.
			errc <- onOwnThread(fn)
			runtime.UnlockOSThread()
			return
		}
		errc <- thenBack(fn)
		// No UnlockOSThread: the thread ends with this goroutine.
	}()
	return <-errc
}

// thenBack runs fn, then moves the calling thread back into the network
// namespace it started in. The thread ends anyway, but some moments after
// the caller hears back: until then it would hold the pod's namespace and
// show in /proc as a thread of the process inside it.
func thenBack(fn func() error) error {
	own, err := os.Open(Self())
	if err != nil {
		return fmt.Errorf("open own netns: %w", err)
	}
	defer own.Close()
	err = fn()
	_ = unix.Setns(int(own.Fd()), unix.CLONE_NEWNET) // if not, the thread's end settles it
	return err
}
