package image

import (
	"archive/tar"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	bolt "go.etcd.io/bbolt"

	"github.com/huskrt/husk/internal/stats"
)

// The store's usage is kept as blobs and layers come and go, and equals
// what a walk of the whole store finds; a reopened store takes the saved
// figures (it does not walk them again) and measures only what has none.
func TestStoreUsageWithoutWalk(t *testing.T) {
	needRoot(t)
	reg := newRegistry(t, nil)
	base := layerOf(t,
		&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755},
		&tar.Header{Name: "bin/tool", Typeflag: tar.TypeReg, Mode: 0o755},
		&tar.Header{Name: "bin/alias", Typeflag: tar.TypeLink, Linkname: "bin/tool"},
		&tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755},
		&tar.Header{Name: "etc/conf", Typeflag: tar.TypeReg, Mode: 0o644})
	extra, err := random.Layer(200000, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	one := imageOf(t, base)
	two, err := mutate.AppendLayers(one, extra)
	if err != nil {
		t.Fatal(err)
	}
	reg.push(t, "library/one:1", one)
	reg.push(t, "library/two:1", two)
	dir := t.TempDir()
	root := filepath.Join(dir, "images")
	db := openDB(t, dir)
	s := newService(t, root, db, mirror(reg.host))
	checkUsage := func(s *Service, what string) {
		t.Helper()
		bytes, inodes, _, mount := s.FsInfo()
		wb, wi, err := stats.DiskUsage(root)
		if err != nil {
			t.Fatal(err)
		}
		if bytes != wb || inodes != wi {
			t.Errorf("%s: FsInfo = %d bytes %d inodes, a walk finds %d bytes %d inodes", what, bytes, inodes, wb, wi)
		}
		if mount == "" {
			t.Errorf("%s: no mount point", what)
		}
	}
	checkUsage(s, "empty store")
	for _, ref := range []string{"one:1", "two:1"} {
		if _, err := s.Pull(context.Background(), ref, nil); err != nil {
			t.Fatal(err)
		}
	}
	checkUsage(s, "two images sharing a layer")
	if err := s.Remove("one:1"); err != nil {
		t.Fatal(err)
	}
	checkUsage(s, "after removing the first")

	// Reopened, the store takes the saved figures: a file that appears in
	// a layer behind its back is not seen, since nothing is walked.
	img, err := s.Resolve("two:1")
	if err != nil {
		t.Fatal(err)
	}
	sneaked := filepath.Join(s.LayerDirs(img)[0], "sneaked")
	if err := os.WriteFile(sneaked, make([]byte, 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	var st os.FileInfo
	if st, err = os.Stat(sneaked); err != nil {
		t.Fatal(err)
	}
	s = newService(t, root, db, mirror(reg.host))
	bytes, inodes, _, _ := s.FsInfo()
	wb, wi, _ := stats.DiskUsage(root)
	if wi != inodes+1 || wb < bytes+uint64(st.Size()) {
		t.Errorf("reopened: FsInfo = %d bytes %d inodes, walk %d bytes %d inodes: want the walk to see one more file of 8 KiB", bytes, inodes, wb, wi)
	}
	if err := os.Remove(sneaked); err != nil {
		t.Fatal(err)
	}
	checkUsage(s, "reopened")

	// Figures an older husk never saved are measured once at open.
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket([]byte(bucketUsage)); err != nil {
			return err
		}
		_, err := tx.CreateBucket([]byte(bucketUsage))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	s = newService(t, root, db, mirror(reg.host))
	checkUsage(s, "without saved figures")

	// Everything removed: the store's own dirs are left, and no figure.
	if err := s.Remove("two:1"); err != nil {
		t.Fatal(err)
	}
	checkUsage(s, "empty again")
	var left []string
	_ = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucketUsage)).ForEach(func(k, _ []byte) error {
			left = append(left, string(k))
			return nil
		})
	})
	if len(left) != 0 {
		t.Errorf("figures of removed items left: %s", strings.Join(left, ", "))
	}
}
