package main

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Implemented in signals_amd64.s.
func exitHandler() uintptr // address of: exit_group(0)
func reapHandler() uintptr // address of: while wait4(-1, NULL, WNOHANG, NULL) > 0 {}
func sigreturn() uintptr   // address of: rt_sigreturn(), the handlers' return path

// Flags of struct sigaction (include/uapi/asm-generic/signal-defs.h, x86).
const (
	saNoCldStop = 0x1
	saRestorer  = 0x04000000
	saOnStack   = 0x08000000
	saRestart   = 0x10000000
)

// kernelSigaction is the kernel's struct sigaction on x86-64.
type kernelSigaction struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}

// installHandlers replaces the Go runtime's handlers of SIGINT, SIGTERM and
// SIGCHLD with pause.c's. SA_ONSTACK: the handlers run on the signal stack
// the Go runtime gives every thread, never on a small goroutine stack.
func installHandlers() int {
	for _, h := range []struct {
		sig     unix.Signal
		handler uintptr
		flags   uint64
		code    int
	}{
		{unix.SIGINT, exitHandler(), 0, exitSigint},
		{unix.SIGTERM, exitHandler(), 0, exitSigterm},
		{unix.SIGCHLD, reapHandler(), saNoCldStop, exitSigchld},
	} {
		sa := kernelSigaction{
			handler:  h.handler,
			flags:    h.flags | saRestorer | saOnStack | saRestart,
			restorer: sigreturn(),
		}
		if _, _, errno := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(h.sig),
			uintptr(unsafe.Pointer(&sa)), 0, unsafe.Sizeof(sa.mask), 0, 0); errno != 0 {
			return h.code
		}
	}
	return 0
}

// waitForever sleeps in pause(2) as pause.c does; each handled signal
// wakes it and it sleeps again.
func waitForever() {
	for {
		_ = unix.Pause()
	}
}
