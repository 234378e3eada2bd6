package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/pkg/archive"
)

// errUnsafeEntry marks a layer entry that would reach outside the layer.
var errUnsafeEntry = errors.New("entry escapes the layer root")

// unpack extracts an uncompressed layer tar into dir (which must exist and
// be empty) with containerd's applier, whiteouts turned into overlayfs
// whiteouts (".wh.name" a 0:0 character device, ".wh..wh..opq" the opaque
// xattr) as containerd's overlay snapshotter does. The applier already
// confines every path to dir; the filter in front of it goes further and
// rejects a layer whose entries try to leave it, so a malicious image fails
// its pull with a clear error instead of unpacking into a surprise.
// The caller removes dir when this fails.
func unpack(ctx context.Context, r io.Reader, dir string) error {
	_, err := archive.Apply(ctx, dir, r,
		archive.WithConvertWhiteout(archive.OverlayConvertWhiteout),
		archive.WithFilter(func(hdr *tar.Header) (bool, error) { return true, checkEntry(dir, hdr) }))
	return err
}

// checkEntry refuses an entry whose name or hard-link target leaves the
// layer (".." that climbs out, an absolute path, a NUL) or whose parent
// path goes through a symlink: each layer is unpacked into its own empty
// dir, so only a symlink made earlier in this very layer can be met, and
// no layer a build tool makes writes through one.
func checkEntry(dir string, hdr *tar.Header) error {
	rel, err := cleanEntry(hdr.Name)
	if err != nil {
		return err
	}
	if err := safeParent(dir, filepath.Dir(rel)); err != nil {
		return fmt.Errorf("layer entry %q: %w", hdr.Name, err)
	}
	if hdr.Typeflag == tar.TypeLink {
		target, err := cleanEntry(hdr.Linkname)
		if err != nil || target == "." {
			return fmt.Errorf("layer entry %q: hard link to %q: %w", hdr.Name, hdr.Linkname, errUnsafeEntry)
		}
		if err := safeParent(dir, filepath.Dir(target)); err != nil {
			return fmt.Errorf("layer entry %q: hard link to %q: %w", hdr.Name, hdr.Linkname, err)
		}
	}
	return nil
}

// cleanEntry turns a tar entry name into a clean relative path ("." for
// the root), refusing one that is absolute, holds a NUL or climbs out.
func cleanEntry(name string) (string, error) {
	if strings.ContainsRune(name, 0) || filepath.IsAbs(name) {
		return "", fmt.Errorf("layer entry %q: %w", name, errUnsafeEntry)
	}
	p := filepath.Clean(name)
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", fmt.Errorf("layer entry %q: %w", name, errUnsafeEntry)
	}
	return p, nil
}

// safeParent checks that no existing component of rel below dir is a
// symlink, so nothing is written through one.
func safeParent(dir, rel string) error {
	cur := dir
	for _, part := range strings.Split(rel, "/") {
		if part == "" || part == "." {
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
	}
	return nil
}
