package pausesetup

import "golang.org/x/sys/unix"

// Supported says that husk-pause has its setup entry point here.
const Supported = true

// auditArch is AUDIT_ARCH_X86_64; abiBit marks x32 system calls, which
// the filter refuses with the process.
const (
	auditArch = 0xc000003e
	abiBit    = 0x40000000
)

// afterSetup are the system calls husk-pause makes once its filter is
// installed (see cmd/husk-pause/entry_amd64.s): the setup's report on fd
// 3, pause(2), the SIGCHLD handler's wait4 and the SIGINT/SIGTERM
// handler's exit_group, the handlers' return, and the two calls the kernel
// may make on its behalf (restart_syscall) or at an exit (exit).
var afterSetup = []uintptr{
	unix.SYS_WRITE, unix.SYS_CLOSE, unix.SYS_PAUSE, unix.SYS_WAIT4, unix.SYS_RT_SIGRETURN,
	unix.SYS_EXIT_GROUP, unix.SYS_EXIT, unix.SYS_RESTART_SYSCALL,
}
