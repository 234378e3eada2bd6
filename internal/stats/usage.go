package stats

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// DiskUsage adds up the allocated bytes (st_blocks) and the inodes of
// everything below dir, dir included, each hard-linked inode once; entries
// that vanish while it walks are skipped. It walks the whole tree: callers
// keep its result rather than call it on every request.
func DiskUsage(dir string) (bytes, inodes uint64, err error) {
	type inode struct{ dev, ino uint64 }
	linked := map[inode]bool{}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == dir {
				return err
			}
			return nil // vanished while walking
		}
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil {
			return nil
		}
		if st.Nlink > 1 && !d.IsDir() {
			k := inode{uint64(st.Dev), st.Ino}
			if linked[k] {
				return nil
			}
			linked[k] = true
		}
		inodes++
		bytes += uint64(st.Blocks) * 512
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("disk usage of %s: %w", dir, err)
	}
	return bytes, inodes, nil
}

// MountPoint finds the mount point of the filesystem holding path: the
// highest ancestor on the same device.
func MountPoint(path string) (string, error) {
	p, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return "", fmt.Errorf("mount point of %s: %w", path, err)
	}
	for p != "/" {
		parent := filepath.Dir(p)
		var pst unix.Stat_t
		if err := unix.Stat(parent, &pst); err != nil {
			return "", fmt.Errorf("mount point of %s: %w", path, err)
		}
		if pst.Dev != st.Dev {
			return p, nil
		}
		p = parent
	}
	return "/", nil
}

// MountSource is the source of the mount at mountpoint (a device such as
// /dev/vda1, or the filesystem's name) from /proc/self/mountinfo: the
// device label cAdvisor gives the filesystem metrics. "" when not found.
func MountSource(mountpoint string) string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	source := ""
	for line := range strings.SplitSeq(string(b), "\n") {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		f := strings.Fields(line)
		if len(f) < 5 || f[4] != mountpoint {
			continue
		}
		for i := 5; i+2 < len(f); i++ {
			if f[i] == "-" {
				source = f[i+2] // the last mount on the point is the one in effect
				break
			}
		}
	}
	return source
}

// Filesystem is the size and inodes of the filesystem holding path.
func Filesystem(path string) (capacityBytes, inodes, inodesFree uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, 0, 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return st.Blocks * uint64(st.Bsize), st.Files, st.Ffree, nil
}
