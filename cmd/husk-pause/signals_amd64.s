#include "textflag.h"

// Signal handlers, called by the kernel (not by Go) on the thread's signal
// stack. They touch no Go state: only syscalls.

// exit_group(0): SIGINT and SIGTERM end the pause with status 0.
TEXT ·onExit(SB),NOSPLIT|NOFRAME,$0
	MOVL	$0, DI
	MOVL	$231, AX	// SYS_exit_group
	SYSCALL
	HLT

// Reap every exited child: while (wait4(-1, NULL, WNOHANG, NULL) > 0);
TEXT ·onChild(SB),NOSPLIT|NOFRAME,$0
loop:
	MOVQ	$-1, DI
	MOVQ	$0, SI
	MOVQ	$1, DX		// WNOHANG
	MOVQ	$0, R10
	MOVL	$61, AX		// SYS_wait4
	SYSCALL
	CMPQ	AX, $0
	JGT	loop
	RET

// The return path of a handler: rt_sigreturn restores the interrupted
// thread's registers and signal mask.
TEXT ·onReturn(SB),NOSPLIT|NOFRAME,$0
	MOVL	$15, AX		// SYS_rt_sigreturn
	SYSCALL
	HLT

TEXT ·exitHandler(SB),NOSPLIT,$0-8
	MOVQ	$·onExit(SB), AX
	MOVQ	AX, ret+0(FP)
	RET

TEXT ·reapHandler(SB),NOSPLIT,$0-8
	MOVQ	$·onChild(SB), AX
	MOVQ	AX, ret+0(FP)
	RET

TEXT ·sigreturn(SB),NOSPLIT,$0-8
	MOVQ	$·onReturn(SB), AX
	MOVQ	AX, ret+0(FP)
	RET
