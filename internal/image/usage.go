package image

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/huskrt/husk/internal/atomicfile"
	"github.com/huskrt/husk/internal/stats"
)

// bucketUsage keeps the measured usage of each blob and layer of the
// store: "blobs/<hex>" or "layers/<hex>" -> bytes and inodes, 8 bytes each.
const bucketUsage = "image-usage"

// usage is the disk usage of one item of the store, or of the store.
type usage struct{ bytes, inodes uint64 }

// storeUsage is the image store's disk usage, kept as blobs and layers are
// committed and removed, so that ImageFsInfo, which the kubelet polls,
// never walks the store. The store knows exactly what it adds: a blob is
// measured with one stat when it is committed, a layer with one walk of
// the dir it was just unpacked in (its files still in the page cache).
// The figures are written to the database in the transaction that records
// an image (no write of their own on the pull's path), and deleted with
// what GC removes. Opening the store measures what has no figure (items of
// an older husk, or of a pull that crashed before its record) and forgets
// figures of items that are gone: a read of the two directories, not a
// walk. What pulls are still writing (temporary blobs and layer dirs) is
// counted once committed.
type storeUsage struct {
	mu sync.Mutex // guards items, unsaved, total and dirs
	// items are the figures by key; unsaved those not in the database yet.
	items   map[string]usage
	unsaved map[string]bool
	total   usage
	// dirs is the usage of the store's own directories, measured again
	// whenever an item is added or removed.
	dirs usage
}

func blobKey(hex string) string  { return "blobs/" + hex }
func layerKey(hex string) string { return "layers/" + hex }

// add counts a committed item.
func (u *storeUsage) add(key string, v usage) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, ok := u.items[key]; ok {
		return
	}
	u.items[key] = v
	u.unsaved[key] = true
	u.total.bytes += v.bytes
	u.total.inodes += v.inodes
}

// remove uncounts items GC removed; it returns the keys to delete from the
// database.
func (u *storeUsage) remove(keys []string) []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []string
	for _, k := range keys {
		v, ok := u.items[k]
		if !ok {
			continue
		}
		delete(u.items, k)
		delete(u.unsaved, k)
		u.total.bytes -= v.bytes
		u.total.inodes -= v.inodes
		out = append(out, k)
	}
	return out
}

// sum is the usage of every counted item and of the store's directories.
func (u *storeUsage) sum() usage {
	u.mu.Lock()
	defer u.mu.Unlock()
	return usage{u.total.bytes + u.dirs.bytes, u.total.inodes + u.dirs.inodes}
}

func (u *storeUsage) setDirs(v usage) {
	u.mu.Lock()
	u.dirs = v
	u.mu.Unlock()
}

// saveIn writes the unsaved figures in tx, the transaction of an image
// record; the caller marks them saved once tx commits (saved).
func (u *storeUsage) saveIn(tx *bolt.Tx) ([]string, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	b := tx.Bucket([]byte(bucketUsage))
	var keys []string
	for k := range u.unsaved {
		if err := b.Put([]byte(k), encodeUsage(u.items[k])); err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// saved marks figures written by a committed transaction.
func (u *storeUsage) saved(keys []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, k := range keys {
		delete(u.unsaved, k)
	}
}

func encodeUsage(v usage) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, v.bytes)
	binary.BigEndian.PutUint64(b[8:], v.inodes)
	return b
}

func decodeUsage(b []byte) (usage, bool) {
	if len(b) != 16 {
		return usage{}, false
	}
	return usage{binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:])}, true
}

// loadUsage reads the saved figures, then matches them with the blobs and
// layers on disk: what has no figure is measured, figures of what is gone
// are dropped; both changes are saved at once.
func (s *Service) loadUsage() error {
	saved := map[string]usage{}
	err := s.opts.DB.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucketUsage)).ForEach(func(k, v []byte) error {
			if u, ok := decodeUsage(v); ok {
				saved[string(k)] = u
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	for _, dir := range []struct {
		path string
		key  func(string) string
	}{{filepath.Join(s.opts.Root, "blobs", "sha256"), blobKey}, {filepath.Join(s.opts.Root, "layers"), layerKey}} {
		ents, err := os.ReadDir(dir.path)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if atomicfile.IsTemp(e.Name()) {
				continue
			}
			k := dir.key(e.Name())
			if v, ok := saved[k]; ok {
				s.usage.add(k, v)
				s.usage.saved([]string{k})
				delete(saved, k)
				continue
			}
			v, err := measure(filepath.Join(dir.path, e.Name()))
			if err != nil {
				return err
			}
			s.usage.add(k, v)
		}
	}
	s.measureDirs()
	return s.opts.DB.Update(func(tx *bolt.Tx) error {
		for k := range saved { // gone from disk
			if err := tx.Bucket([]byte(bucketUsage)).Delete([]byte(k)); err != nil {
				return err
			}
		}
		keys, err := s.usage.saveIn(tx)
		if err == nil {
			tx.OnCommit(func() { s.usage.saved(keys) })
		}
		return err
	})
}

// measure is the usage of a blob (one stat) or a layer dir (one walk).
func measure(path string) (usage, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return usage{}, fmt.Errorf("measure %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return usage{bytes: uint64(st.Blocks) * 512, inodes: 1}, nil
	}
	b, i, err := stats.DiskUsage(path)
	return usage{b, i}, err
}

// forgetUsage uncounts what GC removed ("layers/<hex>", "blobs/sha256/<hex>")
// and deletes its figures.
func (s *Service) forgetUsage(removed []string) error {
	keys := make([]string, 0, len(removed))
	for _, r := range removed {
		dir, name := filepath.Split(r)
		if dir == "layers/" {
			keys = append(keys, layerKey(name))
		} else {
			keys = append(keys, blobKey(name))
		}
	}
	keys = s.usage.remove(keys)
	if len(keys) == 0 {
		return nil
	}
	s.measureDirs()
	return s.opts.DB.Update(func(tx *bolt.Tx) error {
		for _, k := range keys {
			if err := tx.Bucket([]byte(bucketUsage)).Delete([]byte(k)); err != nil {
				return err
			}
		}
		return nil
	})
}

// FsInfo is the store's usage: bytes and inodes of its blobs, layers and
// own directories, from the figures kept as they change (storeUsage), and
// the mount point of the filesystem holding it. Nothing is read from disk.
func (s *Service) FsInfo() (bytes, inodes uint64, at time.Time, mountpoint string) {
	u := s.usage.sum()
	return u.bytes, u.inodes, time.Now(), s.mountpoint
}

// storeDirs are the store's own directories, counted with its items.
var storeDirs = []string{"", "blobs", "blobs/sha256", "layers", "tmp"}

// measureDirs measures the store's own directories again: they grow
// (and, on most filesystems, never shrink) as entries are added.
func (s *Service) measureDirs() {
	var u usage
	for _, d := range storeDirs {
		var st unix.Stat_t
		if unix.Lstat(filepath.Join(s.opts.Root, d), &st) == nil {
			u.bytes += uint64(st.Blocks) * 512
			u.inodes++
		}
	}
	s.usage.setDirs(u)
}
