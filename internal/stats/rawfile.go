package stats

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Opening a cgroup file is most of what reading it costs: the kernel sets
// up its seq_file and security checks on every open, while pread(fd, 0)
// on a file kept open renders the content afresh for a fraction of that
// (here, 3 files: 13-48 µs opened each time, 0.5-2 µs kept open). The
// Basic reads, which the kubelet polls for every container and pod, keep
// the files of each cgroup they read open (fileCache): held files do not
// keep a cgroup from being removed, and read ENODEV once it is, which
// drops them. A cgroup's files are closed when its owner is removed
// (Reader.Forget), when they have not been read for cacheIdle, and opened
// afresh after cacheMaxAge (a file absent at first, such as a controller
// enabled later, is looked for again then). At most cacheGroups cgroups
// are kept (8 files each): beyond, files are opened for each read.

const (
	cacheGroups  = 1024
	cacheIdle    = 2 * time.Minute
	cacheMaxAge  = 10 * time.Minute
	cacheSweepAt = 30 * time.Second
)

// fileCache holds the open files of the cgroups read, by group path.
type fileCache struct {
	mu     sync.Mutex // guards groups and swept
	groups map[string]*groupFiles
	swept  time.Time
	// limit is the most cgroups kept; 0 is cacheGroups.
	limit int
}

// groupFiles are the open files of one cgroup. Its mutex is held for a
// whole read of the cgroup and to close the files, so a file is never
// closed under a reader.
type groupFiles struct {
	mu     sync.Mutex
	fds    map[string]int // by path; -1: absent
	opened time.Time
	used   time.Time
	closed bool
}

// acquire returns the locked files of group; nil (files are opened for
// each read) when the cache is full. Release with release.
func (c *fileCache) acquire(group string) *groupFiles {
	now := time.Now()
	c.mu.Lock()
	if c.groups == nil {
		c.groups = map[string]*groupFiles{}
	}
	if now.Sub(c.swept) > cacheSweepAt {
		c.sweepLocked(now)
	}
	g := c.groups[group]
	if g == nil || now.Sub(g.opened) > cacheMaxAge {
		if g != nil {
			c.dropLocked(group, g)
		}
		limit := c.limit
		if limit == 0 {
			limit = cacheGroups
		}
		if len(c.groups) >= limit {
			c.mu.Unlock()
			return nil
		}
		g = &groupFiles{fds: map[string]int{}, opened: now}
		c.groups[group] = g
	}
	g.used = now
	c.mu.Unlock()
	g.mu.Lock()
	if g.closed { // dropped between the lookup and the lock
		g.mu.Unlock()
		return nil
	}
	return g
}

func (g *groupFiles) release() {
	if g != nil {
		g.mu.Unlock()
	}
}

// forget closes the files of group.
func (c *fileCache) forget(group string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if g := c.groups[group]; g != nil {
		c.dropLocked(group, g)
	}
}

// dropLocked removes g from the cache and closes its files once no read
// holds them; c.mu must be held.
func (c *fileCache) dropLocked(group string, g *groupFiles) {
	delete(c.groups, group)
	go func() { // g.mu may be held by a read: close when it is done
		g.mu.Lock()
		defer g.mu.Unlock()
		g.closeLocked()
	}()
}

func (g *groupFiles) closeLocked() {
	for _, fd := range g.fds {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	g.fds, g.closed = nil, true
}

// sweepLocked drops the cgroups not read for cacheIdle; c.mu must be held.
func (c *fileCache) sweepLocked(now time.Time) {
	c.swept = now
	for group, g := range c.groups {
		if now.Sub(g.used) > cacheIdle {
			c.dropLocked(group, g)
		}
	}
}

// size is the number of cgroups whose files are open (for tests).
func (c *fileCache) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.groups)
}

// reader reads the files of one cgroup, through g's open files when g is
// not nil, into buf.
type reader struct {
	g   *groupFiles
	buf []byte
	// gone is set when a file read ENODEV: the cgroup was removed.
	gone bool
}

// read returns the content of the file at path, valid until the next read.
// A missing file, or one of a removed cgroup, is an error wrapping
// os.ErrNotExist.
func (r *reader) read(path string) ([]byte, error) {
	if r.g == nil {
		return r.readOnce(path)
	}
	fd, ok := r.g.fds[path]
	if !ok {
		var err error
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				r.g.fds[path] = -1 // looked for again after cacheMaxAge
			}
			return nil, &pathError{op: "open", path: path, err: err}
		}
		r.g.fds[path] = fd
	}
	if fd < 0 {
		return nil, &pathError{op: "open", path: path, err: unix.ENOENT}
	}
	return r.readFd(fd, path)
}

// readOnce opens, reads and closes path.
func (r *reader) readOnce(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &pathError{op: "open", path: path, err: err}
	}
	defer unix.Close(fd)
	return r.readFd(fd, path)
}

// readFd reads the whole content of fd from offset 0: a cgroup file
// renders it afresh on every read from 0.
func (r *reader) readFd(fd int, path string) ([]byte, error) {
	n := 0
	for {
		if n == len(r.buf) {
			r.buf = append(r.buf, make([]byte, len(r.buf))...)
		}
		m, err := unix.Pread(fd, r.buf[n:], int64(n))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.ENODEV) {
			r.gone = true
			return nil, &pathError{op: "read", path: path, err: os.ErrNotExist}
		}
		if err != nil {
			return nil, &pathError{op: "read", path: path, err: err}
		}
		if m == 0 {
			return r.buf[:n], nil
		}
		n += m
		// The content comes in one read when it fits; a short read is
		// the end.
		if n < len(r.buf) {
			return r.buf[:n], nil
		}
	}
}

// pathError is os.PathError without its allocations; it unwraps to the
// errno, so errors.Is(err, os.ErrNotExist) holds.
type pathError struct {
	op, path string
	err      error
}

func (e *pathError) Error() string { return fmt.Sprintf("%s %s: %v", e.op, e.path, e.err) }
func (e *pathError) Unwrap() error { return e.err }
