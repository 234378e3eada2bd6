package ociruntime

import (
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// runcSeals are the seals runc looks for on its own binary (runc 1.1's
// is_self_cloned, 1.2's exeseal): a binary in a memfd sealed so is one no
// container can write to, which runc then runs as it is.
const runcSeals = unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE

// sealedBinary is a copy of a runtime binary in a sealed memfd, which
// huskd and the monitors exec by /proc/<huskd>/fd/<n>. runc protects its
// binary from the container it starts (CVE-2019-5736) by copying itself,
// 8.7 MB on this node, into a fresh file and re-executing that in every
// `runc init`, unless the binary it runs from is such a sealed memfd:
// one copy for the daemon's life instead of one per container started.
// The copy is made anew when the binary on disk changes (an upgrade);
// the old one stays open, as a monitor may be about to exec it.
type sealedBinary struct {
	path string

	mu    sync.Mutex
	key   fileKey
	file  *os.File   // the current copy
	older []*os.File // the copies of earlier binaries
}

// fileKey tells one binary on disk from another.
type fileKey struct {
	dev, ino  uint64
	size      int64
	mtimeNsec int64
	ctimeNsec int64
}

func keyOf(path string) (fileKey, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fileKey{}, err
	}
	return fileKey{dev: st.Dev, ino: st.Ino, size: st.Size, mtimeNsec: st.Mtim.Nano(), ctimeNsec: st.Ctim.Nano()}, nil
}

// execPath is the file to exec for the binary: the sealed copy of what
// is on disk now, made here when there is none yet or the binary
// changed. Without a copy (the memfd cannot be made) it is the binary.
func (s *sealedBinary) execPath() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	key, err := keyOf(s.path)
	if err != nil {
		return s.path // the exec will say what is wrong
	}
	if s.file == nil || key != s.key {
		f, err := sealedCopy(s.path)
		if err != nil {
			return s.path
		}
		if s.file != nil {
			s.older = append(s.older, s.file)
		}
		s.file, s.key = f, key
	}
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), s.file.Fd())
}

// sealedCopy copies the ELF binary at path into a memfd sealed with
// runcSeals. A script is refused: its interpreter could not open the
// copy, which is closed on exec.
func sealedCopy(path string) (*os.File, error) {
	src, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	magic := make([]byte, 4)
	if _, err := io.ReadFull(src, magic); err != nil || string(magic) != "\x7fELF" {
		return nil, fmt.Errorf("%s is not an ELF binary", path)
	}
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	fd, err := unix.MemfdCreate("runtime:"+path, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "memfd:"+path)
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		return nil, fmt.Errorf("copy %s: %w", path, err)
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, runcSeals); err != nil {
		f.Close()
		return nil, fmt.Errorf("seal %s: %w", path, err)
	}
	if err := unix.Fchmod(int(f.Fd()), 0o555); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
