package stats

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// cgroupDir reads the small files of one cgroup directory with plain
// system calls: the directory is opened once and each file opened relative
// to it, read with one read into a reused buffer, and closed. os.ReadFile
// would add a path walk, an fstat, a non-blocking switch and a poller
// registration to every file, which on a list of 110 pods is most of the
// time spent (the kernel formats the content either way).
type cgroupDir struct {
	fd   int
	path string
	buf  []byte
}

// openDir opens a cgroup directory; an error wraps os.ErrNotExist when the
// cgroup does not exist.
func openDir(path string, buf []byte) (*cgroupDir, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &pathError{op: "open", path: path, err: err}
	}
	return &cgroupDir{fd: fd, path: path, buf: buf}, nil
}

func (d *cgroupDir) close() { unix.Close(d.fd) }

func (d *cgroupDir) join(name string) string {
	if d.path == "" {
		return name
	}
	return d.path + "/" + name
}

// read returns the content of a file of the directory, valid until the
// next read. A cgroupDir of AT_FDCWD and no path reads files by their
// whole path.
func (d *cgroupDir) read(name string) ([]byte, error) {
	fd, err := unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &pathError{op: "open", path: d.join(name), err: err}
	}
	defer unix.Close(fd)
	n := 0
	for {
		if n == len(d.buf) {
			d.buf = append(d.buf, make([]byte, len(d.buf))...)
		}
		m, err := unix.Read(fd, d.buf[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, &pathError{op: "read", path: d.join(name), err: err}
		}
		if m == 0 {
			return d.buf[:n], nil
		}
		n += m
		// A cgroup file's content comes in one read when it fits; a
		// short read means the end.
		if n < len(d.buf) {
			return d.buf[:n], nil
		}
	}
}

// pathError is os.PathError without its allocation-heavy formatting; it
// unwraps to the errno, so errors.Is(err, os.ErrNotExist) holds.
type pathError struct {
	op, path string
	err      error
}

func (e *pathError) Error() string { return fmt.Sprintf("%s %s: %v", e.op, e.path, e.err) }
func (e *pathError) Unwrap() error { return e.err }
