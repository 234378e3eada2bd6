#include "textflag.h"
#include "go_asm.h"

// Linux x86-64 system calls and flags.
#define SYS_read	0
#define SYS_write	1
#define SYS_close	3
#define SYS_rt_sigaction	13
#define SYS_rt_sigreturn	15
#define SYS_pause	34
#define SYS_getpid	39
#define SYS_wait4	61
#define SYS_exit_group	231
#define SIGINT	2
#define SIGTERM	15
#define SIGCHLD	17
#define SA_NOCLDSTOP	0x1
#define SA_RESTORER	0x04000000
#define SA_RESTART	0x10000000
#define EINTR	4
// The infra's end of its setup channel with the monitor.
#define SETUP_FD	3

// The kernel's struct sigaction of each handler: handler, flags, restorer,
// mask. Read-only: the kernel copies them.
DATA saExit<>+0(SB)/8, $·onExit(SB)
DATA saExit<>+8(SB)/8, $(SA_RESTORER|SA_RESTART)
DATA saExit<>+16(SB)/8, $·onReturn(SB)
DATA saExit<>+24(SB)/8, $0
GLOBL saExit<>(SB), RODATA, $32
DATA saReap<>+0(SB)/8, $·onChild(SB)
DATA saReap<>+8(SB)/8, $(SA_RESTORER|SA_RESTART|SA_NOCLDSTOP)
DATA saReap<>+16(SB)/8, $·onReturn(SB)
DATA saReap<>+24(SB)/8, $0
GLOBL saReap<>(SB), RODATA, $32

DATA warnMsg<>+0(SB)/8, $"Warning:"
DATA warnMsg<>+8(SB)/8, $" husk-pa"
DATA warnMsg<>+16(SB)/8, $"use shou"
DATA warnMsg<>+24(SB)/8, $"ld be th"
DATA warnMsg<>+32(SB)/8, $"e first "
DATA warnMsg<>+40(SB)/8, $"process\n"
GLOBL warnMsg<>(SB), RODATA, $48
DATA versionMsg<>+0(SB)/8, $"husk-pau"
DATA versionMsg<>+8(SB)/3, $"se "
GLOBL versionMsg<>(SB), RODATA, $11
DATA newline<>+0(SB)/1, $"\n"
GLOBL newline<>(SB), RODATA, $1

// entry: the kernel jumps here with argc at 0(SP), then argv, envp and
// auxv. As pause.c: "-v" prints the version and exits 0; not being PID 1
// prints a warning; SIGINT and SIGTERM exit 0 (exit 1 or 2 if their
// handler cannot be installed), SIGCHLD reaps every exited child (exit 3),
// and the process pauses for good. With "-infra" it first runs the setup
// program it reads on SETUP_FD (internal/pausesetup).
TEXT ·entry(SB),NOSPLIT|NOFRAME,$0-0
	MOVQ	$0, R14		// R14: 1 with -infra
	MOVQ	0(SP), AX	// argc
	CMPQ	AX, $2
	JLT	warn
	MOVQ	16(SP), SI	// argv[1]
	CMPB	0(SI), $0x2d	// '-'
	JNE	warn
	CMPB	1(SI), $0x76	// 'v'
	JNE	infraflag
	CMPB	2(SI), $0
	JEQ	version
	JMP	warn
infraflag:	// "-infra"
	CMPB	1(SI), $0x69
	JNE	warn
	CMPB	2(SI), $0x6e
	JNE	warn
	CMPB	3(SI), $0x66
	JNE	warn
	CMPB	4(SI), $0x72
	JNE	warn
	CMPB	5(SI), $0x61
	JNE	warn
	CMPB	6(SI), $0
	JNE	warn
	MOVQ	$1, R14

warn:
	MOVQ	$SYS_getpid, AX
	SYSCALL
	CMPQ	AX, $1
	JEQ	handlers
	MOVQ	$2, DI
	LEAQ	warnMsg<>(SB), SI
	MOVQ	$48, DX
	MOVQ	$SYS_write, AX
	SYSCALL

handlers:
	MOVQ	$SIGINT, DI
	LEAQ	saExit<>(SB), SI
	MOVQ	$1, R13
	CALL	sigaction<>(SB)
	MOVQ	$SIGTERM, DI
	LEAQ	saExit<>(SB), SI
	MOVQ	$2, R13
	CALL	sigaction<>(SB)
	MOVQ	$SIGCHLD, DI
	LEAQ	saReap<>(SB), SI
	MOVQ	$3, R13
	CALL	sigaction<>(SB)
	CMPQ	R14, $0
	JEQ	loop
	CALL	setup<>(SB)

loop:
	MOVQ	$SYS_pause, AX
	SYSCALL
	JMP	loop

version:
	MOVQ	$1, DI
	LEAQ	versionMsg<>(SB), SI
	MOVQ	$11, DX
	MOVQ	$SYS_write, AX
	SYSCALL
	MOVQ	$1, DI
	MOVQ	·version+0(SB), SI
	MOVQ	·version+8(SB), DX
	MOVQ	$SYS_write, AX
	SYSCALL
	MOVQ	$1, DI
	LEAQ	newline<>(SB), SI
	MOVQ	$1, DX
	MOVQ	$SYS_write, AX
	SYSCALL
	MOVQ	$0, DI
	JMP	exit<>(SB)

// sigaction installs the handler of signal DI described at SI; on failure
// the process exits with R13.
TEXT sigaction<>(SB),NOSPLIT|NOFRAME,$0
	MOVQ	$0, DX		// no old action
	MOVQ	$8, R10		// sizeof(sigset_t)
	MOVQ	$SYS_rt_sigaction, AX
	SYSCALL
	CMPQ	AX, $0
	JNE	failed
	RET
failed:
	MOVQ	R13, DI
	JMP	exit<>(SB)

// exit ends the process with status DI.
TEXT exit<>(SB),NOSPLIT|NOFRAME,$0
	MOVQ	$SYS_exit_group, AX
	SYSCALL
	HLT

// setup reads the program on SETUP_FD into setupBuf, relocates it, makes
// each system call in order, reports (steps done, errno) on SETUP_FD and
// closes it. A step that fails ends the process (exitStepFailed) after its
// report; a program that cannot be read or is malformed ends it at once
// (exitBadProgram). Registers: R15 the program, R13 its size, BX the
// saved result, R14 the step, R12 the end of the steps.
TEXT setup<>(SB),NOSPLIT|NOFRAME,$0
	LEAQ	·setupBuf(SB), R15
	MOVQ	$const_setupHeaderSize, R13
	XORQ	BX, BX
readheader:
	CMPQ	BX, R13
	JCC	header
	CALL	readsome<>(SB)
	JMP	readheader
header:
	MOVQ	0(R15), AX
	MOVQ	$const_setupMagic, CX
	CMPQ	AX, CX
	JNE	bad
	MOVQ	8(R15), R13
	CMPQ	R13, $const_setupHeaderSize
	JCS	bad
	MOVQ	$const_setupMax, CX
	CMPQ	R13, CX
	JHI	bad
readrest:
	CMPQ	BX, R13
	JCC	read
	CALL	readsome<>(SB)
	JMP	readrest
read:
	// Bounds: 32 + nsteps*64 + nrelocs*8 <= size, checked without overflow.
	MOVQ	16(R15), R12	// nsteps
	MOVQ	24(R15), R9	// nrelocs
	MOVQ	R13, AX
	SHRQ	$6, AX
	CMPQ	R12, AX
	JHI	bad
	MOVQ	R13, AX
	SHRQ	$3, AX
	CMPQ	R9, AX
	JHI	bad
	SHLQ	$6, R12
	ADDQ	$const_setupHeaderSize, R12	// R12: offset of the relocations
	MOVQ	R9, AX
	SHLQ	$3, AX
	ADDQ	R12, AX
	CMPQ	AX, R13
	JHI	bad
	// Relocate: the word at each offset gets the program's address added.
	LEAQ	(R15)(R12*1), R8
	XORQ	CX, CX
reloc:
	CMPQ	CX, R9
	JCC	relocated
	MOVQ	(R8)(CX*8), AX
	CMPQ	AX, R13
	JCC	bad
	LEAQ	8(AX), DX
	CMPQ	DX, R13
	JHI	bad
	ADDQ	R15, (R15)(AX*1)
	INCQ	CX
	JMP	reloc
relocated:
	ADDQ	R15, R12	// R12: the end of the steps
	LEAQ	const_setupHeaderSize(R15), R14
	XORQ	BX, BX
step:
	CMPQ	R14, R12
	JCC	done
	MOVQ	8(R14), DI
	TESTQ	$const_setupFlagArg0, 56(R14)
	JEQ	args
	MOVQ	BX, DI
args:
	MOVQ	16(R14), SI
	MOVQ	24(R14), DX
	MOVQ	32(R14), R10
	MOVQ	40(R14), R8
	MOVQ	48(R14), R9
	MOVQ	0(R14), AX
	SYSCALL
	CMPQ	AX, $-4095
	JCC	stepfailed
	TESTQ	$const_setupFlagSave, 56(R14)
	JEQ	next
	MOVQ	AX, BX
next:
	ADDQ	$const_setupStepSize, R14
	JMP	step
stepfailed:
	NEGQ	AX
	MOVQ	AX, 8(R15)
	CALL	report<>(SB)
	MOVQ	$const_exitStepFailed, DI
	JMP	exit<>(SB)
done:
	MOVQ	$0, 8(R15)
	CALL	report<>(SB)
	MOVQ	$SETUP_FD, DI
	MOVQ	$SYS_close, AX
	SYSCALL
	RET
bad:
	MOVQ	$const_exitBadProgram, DI
	JMP	exit<>(SB)

// readsome reads what is left of the first R13 bytes of the program after
// the BX already read; EOF or an error ends the process (exitBadProgram).
TEXT readsome<>(SB),NOSPLIT|NOFRAME,$0
	MOVQ	$SETUP_FD, DI
	LEAQ	(R15)(BX*1), SI
	MOVQ	R13, DX
	SUBQ	BX, DX
	MOVQ	$SYS_read, AX
	SYSCALL
	CMPQ	AX, $-EINTR
	JEQ	again
	CMPQ	AX, $0
	JLE	eof
	ADDQ	AX, BX
again:
	RET
eof:
	MOVQ	$const_exitBadProgram, DI
	JMP	exit<>(SB)

// report writes (steps done, the errno at 8(R15)) on SETUP_FD: the steps
// done are those before R14.
TEXT report<>(SB),NOSPLIT|NOFRAME,$0
	MOVQ	R14, AX
	SUBQ	R15, AX
	SUBQ	$const_setupHeaderSize, AX
	SHRQ	$6, AX
	MOVQ	AX, 0(R15)
	MOVQ	$SETUP_FD, DI
	MOVQ	R15, SI
	MOVQ	$16, DX
	MOVQ	$SYS_write, AX
	SYSCALL
	RET

// Signal handlers, called by the kernel on the process's stack. They
// touch no memory but the stack.

// exit_group(0): SIGINT and SIGTERM end the pause with status 0.
TEXT ·onExit(SB),NOSPLIT|NOFRAME,$0
	MOVL	$0, DI
	MOVL	$SYS_exit_group, AX
	SYSCALL
	HLT

// Reap every exited child: while (wait4(-1, NULL, WNOHANG, NULL) > 0);
TEXT ·onChild(SB),NOSPLIT|NOFRAME,$0
child:
	MOVQ	$-1, DI
	MOVQ	$0, SI
	MOVQ	$1, DX		// WNOHANG
	MOVQ	$0, R10
	MOVL	$SYS_wait4, AX
	SYSCALL
	CMPQ	AX, $0
	JGT	child
	RET

// The return path of a handler: rt_sigreturn restores the interrupted
// registers and signal mask.
TEXT ·onReturn(SB),NOSPLIT|NOFRAME,$0
	MOVL	$SYS_rt_sigreturn, AX
	SYSCALL
	HLT
