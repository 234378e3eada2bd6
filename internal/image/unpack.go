package image

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Layer whiteouts (OCI image spec, layer.md) and their overlayfs form.
const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
	overlayOpaque  = "trusted.overlay.opaque"
)

// errUnsafeEntry marks a layer entry that would reach outside the layer.
var errUnsafeEntry = errors.New("entry escapes the layer root")

// unpack extracts an uncompressed layer tar into dir (which must exist and
// be empty), turning whiteouts into overlayfs whiteouts: ".wh.name" becomes
// a 0:0 character device "name", ".wh..wh..opq" the opaque xattr on its
// directory. Every path is checked before it is written: no absolute or
// ".." escapes, no writing through a symlink, no hard link to a path
// outside dir. A rejected layer returns an error; the caller removes dir.
func unpack(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	type dirTime struct {
		path string
		mod  time.Time
	}
	var dirs []dirTime
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read layer: %w", err)
		}
		rel, err := cleanEntry(hdr.Name)
		if err != nil {
			return err
		}
		if rel == "" {
			continue // the root itself
		}
		parentRel, base := path.Split(rel)
		if err := safeParent(dir, parentRel); err != nil {
			return fmt.Errorf("layer entry %q: %w", hdr.Name, err)
		}
		parent := filepath.Join(dir, parentRel)
		if base == whiteoutOpaque {
			if err := os.MkdirAll(parent, 0o755); err != nil {
				return err
			}
			if err := unix.Lsetxattr(parent, overlayOpaque, []byte("y"), 0); err != nil {
				return fmt.Errorf("layer entry %q: opaque whiteout: %w", hdr.Name, err)
			}
			continue
		}
		if strings.HasPrefix(base, whiteoutPrefix) {
			target := filepath.Join(parent, strings.TrimPrefix(base, whiteoutPrefix))
			if err := os.MkdirAll(parent, 0o755); err != nil {
				return err
			}
			if err := unix.Mknod(target, unix.S_IFCHR, 0); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("layer entry %q: whiteout: %w", hdr.Name, err)
			}
			continue
		}
		target := filepath.Join(dir, rel)
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return err
		}
		// A later entry replaces an earlier one, unless both are dirs.
		if fi, err := os.Lstat(target); err == nil && !(fi.IsDir() && hdr.Typeflag == tar.TypeDir) {
			if err := os.RemoveAll(target); err != nil {
				return err
			}
		}
		mode := uint32(hdr.Mode & 0o7777)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.Mkdir(target, os.FileMode(mode)); err != nil && !errors.Is(err, os.ErrExist) {
				return err
			}
			dirs = append(dirs, dirTime{target, hdr.ModTime})
		case tar.TypeReg:
			f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("layer entry %q: %w", hdr.Name, err)
			}
		case tar.TypeSymlink:
			// The target is resolved inside the container's root at run
			// time; nothing here follows it.
			if err := os.Symlink(hdr.Linkname, target); err != nil {
				return err
			}
		case tar.TypeLink:
			linkRel, err := cleanEntry(hdr.Linkname)
			if err != nil || linkRel == "" {
				return fmt.Errorf("layer entry %q: hard link to %q: %w", hdr.Name, hdr.Linkname, errUnsafeEntry)
			}
			lp, lb := path.Split(linkRel)
			if err := safeParent(dir, lp); err != nil {
				return fmt.Errorf("layer entry %q: hard link: %w", hdr.Name, err)
			}
			src := filepath.Join(dir, lp, lb)
			if fi, err := os.Lstat(src); err != nil || fi.IsDir() {
				return fmt.Errorf("layer entry %q: hard link to %q: not a file in this layer: %w", hdr.Name, hdr.Linkname, errUnsafeEntry)
			}
			if err := os.Link(src, target); err != nil {
				return err
			}
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			kind := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[hdr.Typeflag]
			if err := unix.Mknod(target, kind|mode, int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))); err != nil {
				return fmt.Errorf("layer entry %q: %w", hdr.Name, err)
			}
		default:
			continue // PAX globals, GNU sparse and the like carry no file
		}
		if err := os.Lchown(target, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("layer entry %q: chown: %w", hdr.Name, err)
		}
		for k, v := range hdr.PAXRecords {
			if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				_ = unix.Lsetxattr(target, x, []byte(v), 0) // best effort, as other runtimes
			}
		}
		if hdr.Typeflag != tar.TypeSymlink {
			// Chmod after chown: chown clears setuid/setgid bits.
			if hdr.Typeflag != tar.TypeLink {
				if err := os.Chmod(target, os.FileMode(mode)|modeBits(mode)); err != nil {
					return err
				}
			}
			_ = os.Chtimes(target, hdr.AccessTime, hdr.ModTime)
		}
	}
	// Directory times last: writing entries into them changed them.
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = os.Chtimes(dirs[i].path, dirs[i].mod, dirs[i].mod)
	}
	return nil
}

func modeBits(mode uint32) os.FileMode {
	var m os.FileMode
	if mode&unix.S_ISUID != 0 {
		m |= os.ModeSetuid
	}
	if mode&unix.S_ISGID != 0 {
		m |= os.ModeSetgid
	}
	if mode&unix.S_ISVTX != 0 {
		m |= os.ModeSticky
	}
	return m
}

// cleanEntry turns a tar entry name into a clean relative path, refusing
// any that leaves the root.
func cleanEntry(name string) (string, error) {
	if strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("layer entry %q: %w", name, errUnsafeEntry)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("layer entry %q: %w", name, errUnsafeEntry)
		}
	}
	p := path.Clean("/" + name)
	if p == "/" {
		return "", nil
	}
	return strings.TrimPrefix(p, "/"), nil
}

// safeParent checks that no existing component of rel below dir is a
// symlink, so nothing is written through one.
func safeParent(dir, rel string) error {
	cur := dir
	for _, part := range strings.Split(strings.Trim(rel, "/"), "/") {
		if part == "" {
			continue
		}
		cur = filepath.Join(cur, part)
		fi, err := os.Lstat(cur)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			return fmt.Errorf("path goes through symlink %q: %w", strings.TrimPrefix(cur, dir), errUnsafeEntry)
		}
		if !fi.IsDir() {
			return fmt.Errorf("path goes through non-directory %q", strings.TrimPrefix(cur, dir))
		}
	}
	return nil
}
