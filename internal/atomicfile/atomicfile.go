// Package atomicfile replaces files so that readers, and a crash, see
// either the old content or the new one, never a mix, and so that the new
// content survives a crash once Commit returns: it is written to a
// temporary file in the target's directory (a rename never crosses
// filesystems), fsynced, renamed over the target, and the directory is
// fsynced so that the rename itself is on disk. Directories are put in
// place with RenameDir and made durable with SyncFS, separately, so that
// a caller committing many of them (the layers of an image) pays for one
// writeback of the filesystem, before the record that refers to them.
//
// It imports only the standard library and x/sys: husk-monitor, a process
// paid per pod, records exit codes with it.
package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// tempMarker is in the name of every temporary file, between the
// target's base name and a random suffix: ".<base>.tmp-<random>". The
// leading dot hides it from globs; the suffix keeps it from ending in the
// target's extension (libcni loads every *.conflist of its directory).
const tempMarker = ".tmp-"

// syncDir is fsyncDir, replaced by tests to see that and when it runs.
var syncDir = fsyncDir

// File is the new content of a path, written to a temporary file beside
// it until Commit puts it in place. The zero value is not usable; get one
// from Create.
type File struct {
	f    *os.File
	path string
	perm os.FileMode
	done bool // committed or aborted: the temporary file is gone
}

// Create starts replacing path. Nothing is visible at path until Commit;
// Abort (or a failed Commit) removes the temporary file.
func Create(path string, perm os.FileMode) (*File, error) {
	dir, base := filepath.Split(path)
	if base == "" {
		return nil, fmt.Errorf("atomic write of %q: no file name", path)
	}
	if dir == "" {
		dir = "." // not CreateTemp's default, os.TempDir: maybe another filesystem
	}
	f, err := os.CreateTemp(dir, "."+base+tempMarker+"*")
	if err != nil {
		return nil, fmt.Errorf("atomic write of %s: %w", path, err)
	}
	return &File{f: f, path: path, perm: perm}, nil
}

// Write writes to the temporary file.
func (f *File) Write(p []byte) (int, error) {
	return f.f.Write(p)
}

// Commit gives the temporary file the mode asked for (the umask does not
// apply), fsyncs it, renames it over the target and fsyncs the directory.
// Before the rename, a failure removes the temporary file and leaves the
// target as it was. A failure of the last step (the directory's fsync)
// leaves the new content in place, but maybe not after a crash.
func (f *File) Commit() error {
	if f.done {
		return fmt.Errorf("atomic write of %s: already committed or aborted", f.path)
	}
	err := f.f.Chmod(f.perm)
	if err == nil {
		err = f.f.Sync()
	}
	if cerr := f.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.f.Name(), f.path)
	}
	if err != nil {
		f.Abort()
		return fmt.Errorf("atomic write of %s: %w", f.path, err)
	}
	f.done = true
	if err := syncDir(filepath.Dir(f.path)); err != nil {
		return fmt.Errorf("atomic write of %s: %w", f.path, err)
	}
	return nil
}

// Abort removes the temporary file. After Commit it does nothing, so
// `defer f.Abort()` undoes every early return of the writer.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.f.Close()
	os.Remove(f.f.Name())
}

// WriteFile replaces path with data (see File.Commit).
func WriteFile(path string, data []byte, perm os.FileMode) error {
	f, err := Create(path, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Abort()
		return fmt.Errorf("atomic write of %s: %w", path, err)
	}
	return f.Commit()
}

// RenameDir renames the directory tmp, filled by the caller, to dst,
// without making either durable: a crash may leave dst with part of its
// content, or leave it out. The caller must call SyncFS before anything
// durable refers to dst, and must treat a dst that nothing durable refers
// to as garbage after a crash (the image store's GC at start does). One
// SyncFS after many RenameDirs costs one writeback instead of one each.
// tmp must be on dst's filesystem. When dst exists, the error matches
// os.ErrExist; on any failure tmp is left for the caller to remove.
func RenameDir(tmp, dst string) error {
	// A non-empty dst fails with ENOTEMPTY or EEXIST, both os.ErrExist.
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("rename %s into place: %w", dst, err)
	}
	return nil
}

// SyncFS makes everything written to the filesystem holding path durable:
// file contents, new names and renames. Per-file fsyncs would cost one
// journal commit per file of a layer with thousands; syncfs(2) writes back
// the whole filesystem in one call instead (and with it whatever else is
// dirty there).
func SyncFS(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("syncfs: %w", err)
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", path, err)
	}
	return nil
}

// IsTemp reports whether name, a file name without its directory, is a
// temporary file of this package: a writer's, or one a crash left.
func IsTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, tempMarker)
}

// RemoveTemps removes the temporary files in dir that crashed writers
// left, and returns their names. Only for a directory no writer is using.
func RemoveTemps(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("remove temporary files: %w", err)
	}
	var removed []string
	for _, e := range ents {
		if !IsTemp(e.Name()) || e.IsDir() {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return removed, fmt.Errorf("remove temporary files: %w", err)
		}
		removed = append(removed, e.Name())
	}
	return removed, nil
}

// fsyncDir makes the entries of dir, such as a rename into it, durable.
func fsyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}
