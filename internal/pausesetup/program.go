// Package pausesetup is the setup program husk-pause runs when it starts as
// a pod's infra without an OCI runtime (husk-pause -infra): the system calls
// that move it into the pod's namespaces and its read-only root and take its
// privileges away, before it pauses. huskd builds the program (Infra), the
// pod's monitor hands it over on fd 3 of the infra, and husk-pause's
// assembly entry point, which never starts the Go runtime, runs it.
//
// The program is data, so that everything that decides what the infra gets
// lives here, in Go, and the assembly stays a short loop: read the program,
// relocate its pointers, make each system call in order, stop at the first
// that fails. Layout, in 64-bit little-endian words:
//
//	header:  Magic, total size in bytes, number of steps, number of relocations
//	steps:   per step: syscall number, 6 arguments, flags (FlagSave, FlagArg0Saved)
//	relocs:  per relocation: the byte offset of a word that holds an offset
//	         into the program; husk-pause adds the program's address to it
//	data:    strings and structures the arguments point to
//
// husk-pause answers on fd 3 with two words, the number of steps done and
// the errno of the step that failed (0 when all succeeded), and closes it.
package pausesetup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
)

// The encoding; cmd/husk-pause's assembly reads the same constants.
const (
	// Magic opens every program: "HUSKPS01" in little-endian order.
	Magic = 0x313053504B535548
	// HeaderSize and StepSize are in bytes.
	HeaderSize = 32
	StepSize   = 64
	// MaxSize bounds a program: husk-pause reads it into a buffer of this
	// size (only the pages it fills cost memory).
	MaxSize = 2 << 20
	// FlagSave keeps the step's result; FlagArg0Saved passes the kept
	// result as the step's first argument (open, then write and close).
	FlagSave      = 1
	FlagArg0Saved = 2
	// ReportSize is husk-pause's answer: steps done, errno.
	ReportSize = 16
)

// husk-pause's exit codes during setup (pause.c's own are 1, 2, 3, 42).
const (
	// ExitStepFailed: a step failed; the report says which and why.
	ExitStepFailed = 4
	// ExitBadProgram: fd 3 did not carry a well-formed program.
	ExitBadProgram = 5
)

// Program is a setup program being built.
type Program struct {
	steps []step
	data  []byte
	// inData are the offsets in data of words that hold data offsets
	// (a pointer inside a structure).
	inData []int
}

type step struct {
	name  string
	nr    uint64
	args  [6]Arg
	flags uint64
}

// Arg is one argument of a step: a number, or a pointer into the
// program's data.
type Arg struct {
	v   uint64
	ptr bool
}

// Int is a number argument.
func Int(v uint64) Arg { return Arg{v: v} }

// Str adds s, NUL-terminated, to the program's data and points to it.
func (p *Program) Str(s string) Arg { return p.Mem(append([]byte(s), 0)) }

// Mem adds b to the program's data, 8-byte aligned, and points to it.
func (p *Program) Mem(b []byte) Arg {
	for len(p.data)%8 != 0 {
		p.data = append(p.data, 0)
	}
	off := len(p.data)
	p.data = append(p.data, b...)
	return Arg{v: uint64(off), ptr: true}
}

// PointerAt makes the 8 bytes at offset off of the data a points to hold
// a pointer to target (a structure that points to another).
func (p *Program) PointerAt(a Arg, off int, target Arg) {
	at := int(a.v) + off
	binary.LittleEndian.PutUint64(p.data[at:], target.v)
	p.inData = append(p.inData, at)
}

// Step adds the system call nr with args; name says what it does, for
// the error when it fails.
func (p *Program) Step(name string, nr uintptr, args ...Arg) {
	p.add(name, nr, 0, args)
}

// StepSave adds a step whose result the following StepOnSaved steps use.
func (p *Program) StepSave(name string, nr uintptr, args ...Arg) {
	p.add(name, nr, FlagSave, args)
}

// StepOnSaved adds a step whose first argument is the saved result; args
// are the others.
func (p *Program) StepOnSaved(name string, nr uintptr, args ...Arg) {
	p.add(name, nr, FlagArg0Saved, append([]Arg{{}}, args...))
}

func (p *Program) add(name string, nr uintptr, flags uint64, args []Arg) {
	if len(args) > 6 {
		panic("pausesetup: a system call takes at most 6 arguments")
	}
	s := step{name: name, nr: uint64(nr), flags: flags}
	copy(s.args[:], args)
	p.steps = append(p.steps, s)
}

// Names are what each step does, in order: the report's step count
// indexes them.
func (p *Program) Names() []string {
	out := make([]string, len(p.steps))
	for i, s := range p.steps {
		out[i] = s.name
	}
	return out
}

// Encode lays the program out as husk-pause reads it.
func (p *Program) Encode() ([]byte, error) {
	stepsAt := HeaderSize
	nrelocs := len(p.inData)
	for _, s := range p.steps {
		for _, a := range s.args {
			if a.ptr {
				nrelocs++
			}
		}
	}
	relocsAt := stepsAt + len(p.steps)*StepSize
	dataAt := relocsAt + nrelocs*8
	size := dataAt + len(p.data)
	if size > MaxSize {
		return nil, fmt.Errorf("infra setup program of %d bytes: at most %d", size, MaxSize)
	}
	b := make([]byte, size)
	put := func(at int, v uint64) { binary.LittleEndian.PutUint64(b[at:], v) }
	put(0, Magic)
	put(8, uint64(size))
	put(16, uint64(len(p.steps)))
	put(24, uint64(nrelocs))
	copy(b[dataAt:], p.data)
	reloc := relocsAt
	addReloc := func(at int) {
		put(reloc, uint64(at))
		reloc += 8
	}
	for i, s := range p.steps {
		at := stepsAt + i*StepSize
		put(at, s.nr)
		for j, a := range s.args {
			v := a.v
			if a.ptr {
				v += uint64(dataAt)
				addReloc(at + 8 + j*8)
			}
			put(at+8+j*8, v)
		}
		put(at+56, s.flags)
	}
	for _, off := range p.inData {
		at := dataAt + off
		put(at, binary.LittleEndian.Uint64(b[at:])+uint64(dataAt))
		addReloc(at)
	}
	return b, nil
}

// ErrIncompleteReport means husk-pause ended before it reported: it was
// killed, or could not read its program (exit ExitBadProgram).
var ErrIncompleteReport = errors.New("no report from the infra's setup")

// ParseReport reads husk-pause's report: nil when every step of a program
// with these step names succeeded, else which step failed and why.
func ParseReport(b []byte, names []string) error {
	if len(b) < ReportSize {
		return ErrIncompleteReport
	}
	done := binary.LittleEndian.Uint64(b)
	errno := binary.LittleEndian.Uint64(b[8:])
	if errno == 0 && done == uint64(len(names)) {
		return nil
	}
	name := fmt.Sprintf("step %d", done)
	if done < uint64(len(names)) {
		name = names[done]
	}
	return fmt.Errorf("infra setup: %s: %w", name, errnoError(errno))
}

// errnoError is the error of a failed system call's errno.
func errnoError(errno uint64) error {
	if errno == 0 {
		return errors.New("stopped before its end")
	}
	return syscall.Errno(errno)
}
