package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"golang.org/x/sys/unix"
)

// errProcessGone means the process to watch had already exited and been
// reaped: its PID names nothing.
var errProcessGone = errors.New("process is gone")

// watchedProcess is one infra process held by a pidfd. The pidfd makes
// signals race-free against PID reuse and tells the watcher of the exit
// whether or not huskd is the parent (after a restart it is not).
type watchedProcess struct {
	pid    int
	onExit func()
	exited chan struct{}

	// mu guards fd, which is -1 once the process has exited.
	mu sync.Mutex
	fd int
}

// signal sends sig; a process that has exited is not an error.
func (p *watchedProcess) signal(sig unix.Signal) error {
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

// wait blocks until the process exits or ctx ends.
func (p *watchedProcess) wait(ctx context.Context) error {
	select {
	case <-p.exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for pid %d: %w", p.pid, ctx.Err())
	}
}

// watcher waits for the exit of every watched process in one goroutine
// blocked in epoll_wait: no thread or poll per sandbox.
type watcher struct {
	log    *slog.Logger
	epfd   int
	wakeFd int // eventfd that ends the loop on close

	// mu guards procs, keyed by pidfd.
	mu    sync.Mutex
	procs map[int32]*watchedProcess
	done  chan struct{}
}

func newWatcher(log *slog.Logger) (*watcher, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("infra watcher: epoll: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("infra watcher: eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, fmt.Errorf("infra watcher: epoll add: %w", err)
	}
	w := &watcher{log: log, epfd: epfd, wakeFd: wake, procs: map[int32]*watchedProcess{}, done: make(chan struct{})}
	go w.loop()
	return w, nil
}

// watch starts watching pid; onExit runs (in its own goroutine) once it has
// exited. A pid that no longer exists gives errProcessGone.
func (w *watcher) watch(pid int, onExit func()) (*watchedProcess, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, errProcessGone
		}
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	p := &watchedProcess{pid: pid, fd: fd, onExit: onExit, exited: make(chan struct{})}
	w.mu.Lock()
	w.procs[int32(fd)] = p
	w.mu.Unlock()
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
		w.mu.Lock()
		delete(w.procs, int32(fd))
		w.mu.Unlock()
		unix.Close(fd)
		return nil, fmt.Errorf("watch pid %d: %w", pid, err)
	}
	return p, nil
}

func (w *watcher) loop() {
	defer close(w.done)
	events := make([]unix.EpollEvent, 32)
	for {
		n, err := unix.EpollWait(w.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			w.log.Error("infra watcher stopped", "error", err)
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
// subreaper, so infra processes it started are its children) and reports it.
func (w *watcher) exited(fd int32) {
	w.mu.Lock()
	p := w.procs[fd]
	delete(w.procs, fd)
	w.mu.Unlock()
	if p == nil {
		return
	}
	_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	// ECHILD: not our child (started before a restart); its parent reaps.
	_ = unix.Waitid(unix.P_PIDFD, int(fd), nil, unix.WEXITED|unix.WNOHANG, nil)
	p.mu.Lock()
	unix.Close(int(fd))
	p.fd = -1
	p.mu.Unlock()
	close(p.exited)
	if p.onExit != nil {
		go p.onExit()
	}
}

func (w *watcher) close() error {
	var one = []byte{1, 0, 0, 0, 0, 0, 0, 0}
	if _, err := unix.Write(w.wakeFd, one); err != nil {
		return fmt.Errorf("infra watcher: wake: %w", err)
	}
	<-w.done
	unix.Close(w.wakeFd)
	return unix.Close(w.epfd)
}
