package proc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Exit is how a watched process ended. Known is false when huskd was not
// its parent (it started before a daemon restart): the kernel tells its
// status to the parent only.
type Exit struct {
	// Code is the exit status, or 128 + the signal that killed it.
	Code     int32
	Signaled bool
	Known    bool
}

// Process is one watched process, held by a pidfd.
type Process struct {
	pid    int
	onExit func(Exit)
	exited chan struct{}
	exit   Exit // set before exited is closed

	// mu guards fd, which is -1 once the process has exited.
	mu sync.Mutex
	fd int
}

// PID is the process's PID (valid while Done is open).
func (p *Process) PID() int { return p.pid }

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.exited }

// Exit is how the process ended; valid once Done is closed.
func (p *Process) Exit() Exit {
	<-p.exited
	return p.exit
}

// Signal sends sig; a process that has exited is not an error.
func (p *Process) Signal(sig unix.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd < 0 {
		return nil
	}
	if err := unix.PidfdSendSignal(p.fd, sig, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal pid %d: %w", p.pid, err)
	}
	return nil
}

// Wait blocks until the process exits or ctx ends.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for pid %d: %w", p.pid, ctx.Err())
	}
}

// Watcher waits for the exit of every watched process in one goroutine
// blocked in epoll_wait: no thread or poll per process.
type Watcher struct {
	log    *slog.Logger
	epfd   int
	wakeFd int // eventfd that ends the loop

	// mu guards procs, keyed by pidfd.
	mu    sync.Mutex
	procs map[int32]*Process
	done  chan struct{}
}

// NewWatcher starts a watcher; Close ends it.
func NewWatcher(log *slog.Logger) (*Watcher, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("process watcher: epoll: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("process watcher: eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, fmt.Errorf("process watcher: epoll add: %w", err)
	}
	w := &Watcher{log: log, epfd: epfd, wakeFd: wake, procs: map[int32]*Process{}, done: make(chan struct{})}
	go w.loop()
	return w, nil
}

// Watch starts watching the process id names; onExit (nil: none) runs in
// its own goroutine once it has exited. The process is checked after its
// pidfd is opened, so the pidfd holds that very process: one of another
// boot, or whose PID now names a later process (another start time), or
// that is gone, is ErrGone. A process that has exited but is not reaped
// yet is watched: its exit is reported at once.
func (w *Watcher) Watch(id Identity, onExit func(Exit)) (*Process, error) {
	if id.PID <= 0 || id.Start == 0 {
		return nil, fmt.Errorf("watch pid %d: no start time to tell it from a later process: %w", id.PID, ErrGone)
	}
	if id.BootID != "" && id.BootID != BootID() {
		return nil, fmt.Errorf("process %d ran in an earlier boot: %w", id.PID, ErrGone)
	}
	fd, err := unix.PidfdOpen(id.PID, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("process %d: %w", id.PID, ErrGone)
		}
		return nil, fmt.Errorf("pidfd_open %d: %w", id.PID, err)
	}
	if start, _, err := stat(id.PID); err != nil || start != id.Start {
		unix.Close(fd)
		return nil, fmt.Errorf("pid %d names another process now: %w", id.PID, ErrGone)
	}
	return w.add(&Process{pid: id.PID, fd: fd, onExit: onExit, exited: make(chan struct{})})
}

// ReapChild watches pid, a child of this process that nobody has waited
// for (so the PID names it until it is reaped), and reaps it when it
// exits. huskd reaps the monitors it starts this way: one loop for all
// of them, where exec.Cmd.Wait would hold a thread blocked in waitid for
// each pod's whole life.
func (w *Watcher) ReapChild(pid int) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	_, err = w.add(&Process{pid: pid, fd: fd, exited: make(chan struct{})})
	return err
}

// add watches p, whose pidfd the watcher now owns.
func (w *Watcher) add(p *Process) (*Process, error) {
	fd := p.fd
	w.mu.Lock()
	w.procs[int32(fd)] = p
	w.mu.Unlock()
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
		w.mu.Lock()
		delete(w.procs, int32(fd))
		w.mu.Unlock()
		unix.Close(fd)
		return nil, fmt.Errorf("watch pid %d: %w", p.pid, err)
	}
	return p, nil
}

func (w *Watcher) loop() {
	defer close(w.done)
	events := make([]unix.EpollEvent, 32)
	for {
		n, err := unix.EpollWait(w.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			w.log.Error("process watcher stopped", "error", err)
			return
		}
		for _, ev := range events[:n] {
			if ev.Fd == int32(w.wakeFd) {
				return
			}
			w.exited(ev.Fd)
		}
	}
}

// exited reaps the process if huskd is its parent (huskd is a child
// subreaper: what it started comes back to it), which gives its status,
// and reports it.
func (w *Watcher) exited(fd int32) {
	w.mu.Lock()
	p := w.procs[fd]
	delete(w.procs, fd)
	w.mu.Unlock()
	if p == nil {
		return
	}
	_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	p.exit = reap(int(fd), p.pid)
	p.mu.Lock()
	unix.Close(int(fd))
	p.fd = -1
	p.mu.Unlock()
	close(p.exited)
	if p.onExit != nil {
		go p.onExit(p.exit)
	}
}

// reap waits for the exited process of pidfd fd; ECHILD (not our child:
// started before a restart) leaves it to its parent and the status
// unknown.
func reap(fd, pid int) Exit {
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PIDFD, fd, &info, unix.WEXITED|unix.WNOHANG, nil); err != nil {
		return Exit{}
	}
	return exitOf(&info, pid)
}

// siginfo's SIGCHLD fields: si_pid at 16, si_status at 24 (the union
// after three ints and padding, on every 64-bit Linux).
const (
	siPidOffset    = 16
	siStatusOffset = 24
)

// si_code values of SIGCHLD (<asm-generic/siginfo.h>).
const (
	cldExited = 1
	cldKilled = 2
	cldDumped = 3
)

// exitOf reads a child's exit from the siginfo waitid filled.
func exitOf(info *unix.Siginfo, pid int) Exit {
	b := (*[unsafe.Sizeof(unix.Siginfo{})]byte)(unsafe.Pointer(info))
	if info.Signo != int32(unix.SIGCHLD) || int(int32(binary.NativeEndian.Uint32(b[siPidOffset:]))) != pid {
		return Exit{}
	}
	status := int32(binary.NativeEndian.Uint32(b[siStatusOffset:]))
	switch info.Code {
	case cldExited:
		return Exit{Code: status, Known: true}
	case cldKilled, cldDumped:
		return Exit{Code: 128 + status, Signaled: true, Known: true}
	}
	return Exit{}
}

// Close stops the watcher; watched processes are left alone.
func (w *Watcher) Close() error {
	var one = []byte{1, 0, 0, 0, 0, 0, 0, 0}
	if _, err := unix.Write(w.wakeFd, one); err != nil {
		return fmt.Errorf("process watcher: wake: %w", err)
	}
	<-w.done
	unix.Close(w.wakeFd)
	return unix.Close(w.epfd)
}

// Signal sends sig to the process id names, through a pidfd checked
// against its start time and boot: ErrGone when it is not there, never a
// later process with its PID.
func Signal(id Identity, sig unix.Signal) error {
	if id.PID <= 0 || id.Start == 0 || (id.BootID != "" && id.BootID != BootID()) {
		return fmt.Errorf("signal pid %d: %w", id.PID, ErrGone)
	}
	fd, err := unix.PidfdOpen(id.PID, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("signal pid %d: %w", id.PID, ErrGone)
		}
		return fmt.Errorf("pidfd_open %d: %w", id.PID, err)
	}
	defer unix.Close(fd)
	if start, _, err := stat(id.PID); err != nil || start != id.Start {
		return fmt.Errorf("signal pid %d: it names another process now: %w", id.PID, ErrGone)
	}
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("signal pid %d: %w", id.PID, ErrGone)
		}
		return fmt.Errorf("signal pid %d: %w", id.PID, err)
	}
	return nil
}
