package pausesetup

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// Filter is the infra's seccomp filter, as struct sock_filter entries: on
// this architecture's system call ABI only, the calls husk-pause makes
// once its setup is done (afterSetup) are allowed; any other fails with
// EPERM, as in the default profiles of containerd and CRI-O; another ABI
// (x32, ia32 on x86-64) kills the process. The infra runs nothing but
// husk-pause, so this is narrower than any profile a pod may ask for,
// RuntimeDefault included.
func Filter() []byte {
	const (
		ldAbs = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jge   = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
		ret   = unix.BPF_RET | unix.BPF_K
		// struct seccomp_data: nr at 0, arch at 4.
		nrAt, archAt = 0, 4
	)
	n := len(afterSetup)
	// The three returns come last: EPERM at deny, then kill, then allow.
	deny := 4 + n
	kill, allow := deny+1, deny+2
	prog := [][4]uint32{
		{ldAbs, 0, 0, archAt},
		{jeq, 0, uint32(kill - 2), auditArch},
		{ldAbs, 0, 0, nrAt},
		{jge, uint32(kill - 4), 0, abiBit},
	}
	for i, nr := range afterSetup {
		at := 4 + i
		prog = append(prog, [4]uint32{jeq, uint32(allow - at - 1), 0, uint32(nr)})
	}
	prog = append(prog,
		[4]uint32{ret, 0, 0, unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		[4]uint32{ret, 0, 0, unix.SECCOMP_RET_KILL_PROCESS},
		[4]uint32{ret, 0, 0, unix.SECCOMP_RET_ALLOW},
	)
	// struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}
	b := make([]byte, 8*len(prog))
	for i, f := range prog {
		binary.LittleEndian.PutUint16(b[8*i:], uint16(f[0]))
		b[8*i+2], b[8*i+3] = byte(f[1]), byte(f[2])
		binary.LittleEndian.PutUint32(b[8*i+4:], f[3])
	}
	return b
}
