package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sync/singleflight"

	"github.com/huskrt/husk/internal/atomicfile"
	"github.com/huskrt/husk/internal/stats"
)

// Buckets of the image records in the daemon's database.
const (
	bucketImages = "images"
	bucketTags   = "image-tags" // repo tag -> image ID
)

// Options configure a Service. cmd/huskd builds them from the config.
type Options struct {
	// Root holds blobs/, layers/ and tmp/.
	Root string
	// DB is the daemon's database; images keep their own buckets in it.
	DB *bolt.DB
	// Registries configure pulls by registry host; "*" matches any host
	// without its own entry.
	Registries          map[string]Registry
	PullProgressTimeout time.Duration
	// MaxConcurrentDownloads bounds the layers one pull fetches (and
	// unpacks) at once; 0 is DefaultMaxConcurrentDownloads.
	MaxConcurrentDownloads int
	// PinnedImages are references reported pinned (the pause image).
	PinnedImages []string
	// Pulls hears what pulls download and how long they take; nil hears
	// nothing.
	Pulls  PullObserver
	Logger *slog.Logger
}

// PullObserver hears the pulls (internal/metrics' counters).
type PullObserver interface {
	// PulledBytes is told of content as it is downloaded.
	PulledBytes(n int64)
	// PullDone is told how long a pull that succeeded took.
	PullDone(d time.Duration)
}

// Registry configures pulls from one registry host. cmd/huskd maps the
// config's [registries."<host>"] tables to it.
type Registry struct {
	// Endpoints are tried in order; http:// ones are used as plain HTTP.
	Endpoints []string
	// SkipUpstream never falls back to the registry host itself.
	SkipUpstream bool
	Username     string
	Password     string
	// Auth is base64("user:password"), as in a docker config.
	Auth          string
	IdentityToken string
	// CAFile is a PEM bundle trusted for this registry's TLS endpoints.
	CAFile             string
	InsecureSkipVerify bool
}

// Image is an image record, persisted as JSON.
type Image struct {
	// ID is the config digest, the ImageRef the kubelet stores.
	ID          string   `json:"id"`
	RepoTags    []string `json:"repoTags,omitempty"`
	RepoDigests []string `json:"repoDigests,omitempty"`
	// Size is the compressed size of config and layers, as registries
	// and other runtimes report it.
	Size uint64 `json:"size"`
	// Layers are the layers' diff IDs, lowest first.
	Layers   []string `json:"layers"`
	Manifest []byte   `json:"manifest"`
	Config   []byte   `json:"config"`
	// User and Labels are copied from the config at pull, so listing
	// needs no config decoding.
	User   string            `json:"user,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
}

// ConfigFile decodes the image config.
func (i *Image) ConfigFile() (*v1.ConfigFile, error) {
	var c v1.ConfigFile
	if err := json.Unmarshal(i.Config, &c); err != nil {
		return nil, fmt.Errorf("image %s: config: %w", i.ID, err)
	}
	return &c, nil
}

// Service is the image store.
type Service struct {
	opts Options
	log  *slog.Logger

	// pulls merges identical concurrent pulls.
	pulls singleflight.Group
	// fetches are the layers being fetched, by diff ID: a pull that wants
	// one of them waits for it (fetchMerged).
	fetchesMu sync.Mutex
	fetches   map[string]*layerFetch
	// zstd lends decoders to the layers of the pulls in flight.
	zstd zstdPool

	// mu serialises record changes with the GC of layers, so a layer a
	// pull just unpacked is never removed before its record exists.
	mu sync.Mutex

	// heldMu guards held and owners. held counts the holds on layers
	// (diff ID hex) and blobs (digest hex) that GC must keep whether or
	// not a record refers to them: those of pulls that have not recorded
	// their image yet, and the layers each owner (a container) holds.
	heldMu sync.Mutex
	held   map[string]int
	owners map[string]map[string]bool

	// indexMu guards index, the records by ID: what the database holds,
	// kept in memory so listing does not decode every record.
	indexMu sync.RWMutex
	index   map[string]*Image

	// usage is the store's disk usage, kept as it changes; mountpoint the
	// mount point of the filesystem holding Root.
	usage      storeUsage
	mountpoint string

	// commits counts the layers renamed into place; synced is the count
	// the last syncfs covered (syncStore), guarded by syncMu. kickMu
	// guards the background writeback (kickWriteback): one running, and
	// whether commits came since it started.
	commits            atomic.Uint64
	syncFS             func(path string) error // atomicfile.SyncFS; tests watch it
	syncMu             sync.Mutex
	synced             uint64
	kickMu             sync.Mutex
	kicking, kickAgain bool
}

// New opens the store and clears temporary downloads. Call GC once the
// owners of layers (containers) hold them: only then may what no record
// refers to go.
func New(opts Options) (*Service, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.PullProgressTimeout <= 0 {
		opts.PullProgressTimeout = 5 * time.Minute
	}
	if opts.MaxConcurrentDownloads <= 0 {
		opts.MaxConcurrentDownloads = DefaultMaxConcurrentDownloads
	}
	for _, d := range []string{"blobs/sha256", "layers", "tmp"} {
		if err := os.MkdirAll(filepath.Join(opts.Root, d), 0o700); err != nil {
			return nil, fmt.Errorf("image store: %w", err)
		}
	}
	err := opts.DB.Update(func(tx *bolt.Tx) error {
		for _, b := range []string{bucketImages, bucketTags, bucketUsage} {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	s := &Service{opts: opts, log: opts.Logger, index: map[string]*Image{}, held: map[string]int{}, owners: map[string]map[string]bool{},
		fetches: map[string]*layerFetch{}, syncFS: atomicfile.SyncFS,
		usage: storeUsage{items: map[string]usage{}, unsaved: map[string]bool{}}}
	err = opts.DB.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucketImages)).ForEach(func(k, v []byte) error {
			var img Image
			if err := json.Unmarshal(v, &img); err != nil {
				return fmt.Errorf("image record %s: %w", k, err)
			}
			s.index[img.ID] = &img
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	if err := os.RemoveAll(filepath.Join(opts.Root, "tmp")); err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(opts.Root, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	// Blobs are written beside their final name; GC leaves those alone.
	if _, err := atomicfile.RemoveTemps(filepath.Join(opts.Root, "blobs", "sha256")); err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	if err := s.loadUsage(); err != nil {
		return nil, fmt.Errorf("image store: usage: %w", err)
	}
	if s.mountpoint, err = stats.MountPoint(opts.Root); err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	return s, nil
}

// GC removes the layers and blobs that no record refers to and nobody
// holds: what a crash left behind (mid-pull, or after the last container
// using a removed image's layers was removed). huskd calls it at start,
// once the recovered containers hold their layers.
func (s *Service) GC() error {
	removed, err := s.gc()
	if len(removed) > 0 {
		s.log.Info("removed image data no image refers to", "items", removed)
	}
	return err
}

func (s *Service) layerDir(diffID string) string {
	return filepath.Join(s.opts.Root, "layers", strings.TrimPrefix(diffID, "sha256:"))
}

func (s *Service) blobPath(digest string) string {
	return filepath.Join(s.opts.Root, "blobs", "sha256", strings.TrimPrefix(digest, "sha256:"))
}

// LayerDirs returns the image's unpacked layers, lowest first, for overlay.
func (s *Service) LayerDirs(img *Image) []string {
	out := make([]string, len(img.Layers))
	for i, l := range img.Layers {
		out[i] = s.layerDir(l)
	}
	return out
}

// List returns every image, ordered by ID. The records are shared: callers
// must not modify them.
func (s *Service) List() ([]*Image, error) {
	s.indexMu.RLock()
	out := make([]*Image, 0, len(s.index))
	for _, img := range s.index {
		out = append(out, img)
	}
	s.indexMu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// setIndex publishes the records a committed transaction wrote (nil: deleted).
func (s *Service) setIndex(recs map[string]*Image) {
	s.indexMu.Lock()
	defer s.indexMu.Unlock()
	for id, img := range recs {
		if img == nil {
			delete(s.index, id)
		} else {
			s.index[id] = img
		}
	}
}

// Resolve finds an image by ID (sha256:... or bare hex), unique ID prefix,
// repo tag or repo digest, in any of their normalised spellings.
func (s *Service) Resolve(ref string) (*Image, error) {
	if ref == "" {
		return nil, fmt.Errorf("image reference is empty: %w", errdefs.ErrInvalidArgument)
	}
	imgs, err := s.List()
	if err != nil {
		return nil, err
	}
	id := ref
	if !strings.HasPrefix(id, "sha256:") && isHex(id) {
		id = "sha256:" + id
	}
	var byPrefix []*Image
	for _, img := range imgs {
		if img.ID == id {
			return img, nil
		}
		if strings.HasPrefix(id, "sha256:") && len(id) >= len("sha256:")+6 && strings.HasPrefix(img.ID, id) {
			byPrefix = append(byPrefix, img)
		}
	}
	if r, err := ParseReference(ref); err == nil {
		for _, img := range imgs {
			for _, t := range append(append([]string(nil), img.RepoTags...), img.RepoDigests...) {
				if t == r.String() {
					return img, nil
				}
			}
		}
	}
	if len(byPrefix) == 1 {
		return byPrefix[0], nil
	}
	return nil, fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
}

// Pinned reports whether img is one of the configured pinned images.
func (s *Service) Pinned(img *Image) bool {
	for _, p := range s.opts.PinnedImages {
		if r, err := ParseReference(p); err == nil {
			for _, t := range append(append([]string(nil), img.RepoTags...), img.RepoDigests...) {
				if t == r.String() {
					return true
				}
			}
		}
	}
	return false
}

// Remove removes a tag or digest reference from its image, or the whole
// image when ref is its ID or its last name; then frees the layers and
// blobs nothing uses any more. Removing an unknown image succeeds.
func (s *Service) Remove(ref string) error {
	img, err := s.Resolve(ref)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cp := *img
	img = &cp
	changed := map[string]*Image{}
	r, perr := ParseReference(ref)
	whole := perr != nil || img.ID == ref || strings.TrimPrefix(img.ID, "sha256:") == ref
	err = s.opts.DB.Update(func(tx *bolt.Tx) error {
		imgs, tags := tx.Bucket([]byte(bucketImages)), tx.Bucket([]byte(bucketTags))
		if !whole {
			img.RepoTags = without(img.RepoTags, r.String())
			img.RepoDigests = without(img.RepoDigests, r.String())
			if r.Tag != "" {
				if err := tags.Delete([]byte(r.String())); err != nil {
					return err
				}
			}
			// The image stays while a tag names it; a digest name alone
			// keeps it only if it was not a tag that was removed (as
			// `crictl rmi busybox` of the last tag removes the image).
			if len(img.RepoTags) > 0 || (r.Tag == "" && len(img.RepoDigests) > 0) {
				b, err := json.Marshal(img)
				if err != nil {
					return err
				}
				changed[img.ID] = img
				return imgs.Put([]byte(img.ID), b)
			}
		}
		for _, t := range img.RepoTags {
			if err := tags.Delete([]byte(t)); err != nil {
				return err
			}
		}
		changed[img.ID] = nil
		return imgs.Delete([]byte(img.ID))
	})
	if err != nil {
		return fmt.Errorf("remove image %s: %w", img.ID, err)
	}
	s.setIndex(changed)
	if _, err := s.gcLocked(); err != nil {
		return fmt.Errorf("remove image %s: %w", img.ID, err)
	}
	return nil
}

func without(list []string, v string) []string {
	out := list[:0:0]
	for _, x := range list {
		if x != v {
			out = append(out, x)
		}
	}
	return out
}

// gc removes layer dirs and blobs no record refers to.
func (s *Service) gc() ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gcLocked()
}

func (s *Service) gcLocked() ([]string, error) {
	imgs, err := s.List()
	if err != nil {
		return nil, err
	}
	usedLayers, usedBlobs := map[string]bool{}, map[string]bool{}
	for _, img := range imgs {
		for _, l := range img.Layers {
			usedLayers[strings.TrimPrefix(l, "sha256:")] = true
		}
		// Layer blobs are not kept (fetchLayer): those an older husk
		// kept go with the next GC.
		var m v1.Manifest
		if err := json.Unmarshal(img.Manifest, &m); err == nil {
			usedBlobs[m.Config.Digest.Hex] = true
		}
	}
	var removed []string
	for dir, used := range map[string]map[string]bool{"layers": usedLayers, "blobs/sha256": usedBlobs} {
		ents, err := os.ReadDir(filepath.Join(s.opts.Root, dir))
		if err != nil {
			return removed, fmt.Errorf("image gc: %w", err)
		}
		for _, e := range ents {
			// A temporary blob is a pull's, written as GC runs.
			if used[e.Name()] || s.isHeld(e.Name()) || atomicfile.IsTemp(e.Name()) {
				continue
			}
			if err := os.RemoveAll(filepath.Join(s.opts.Root, dir, e.Name())); err != nil {
				_ = s.forgetUsage(removed)
				return removed, fmt.Errorf("image gc: %w", err)
			}
			removed = append(removed, dir+"/"+e.Name())
		}
	}
	sort.Strings(removed)
	if err := s.forgetUsage(removed); err != nil {
		return removed, fmt.Errorf("image gc: usage: %w", err)
	}
	return removed, nil
}

// hold protects the named layers and blobs from GC until release.
func (s *Service) hold(hexes []string) (release func()) {
	s.heldMu.Lock()
	for _, h := range hexes {
		s.held[h]++
	}
	s.heldMu.Unlock()
	return func() {
		s.heldMu.Lock()
		for _, h := range hexes {
			s.unholdLocked(h)
		}
		s.heldMu.Unlock()
	}
}

// unholdLocked drops one hold on hex; heldMu must be held.
func (s *Service) unholdLocked(hex string) {
	if s.held[hex]--; s.held[hex] <= 0 {
		delete(s.held, hex)
	}
}

func (s *Service) isHeld(hex string) bool {
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	return s.held[hex] > 0
}

// HoldLayers keeps layers (diff IDs) from GC while owner holds them, even
// once no image refers to them: a container holds its image's layers from
// CreateContainer, and again at recovery, until RemoveContainer, the way a
// containerd lease holds content. The holds of one owner add up (an image
// volume adds its layers to its container's); ReleaseLayers drops them all.
// A layer that is not unpacked (its image was removed and collected before
// the hold) is NotFound; the hold is kept until released all the same.
func (s *Service) HoldLayers(owner string, diffIDs []string) error {
	// s.mu orders the hold with GC: a layer present below stays.
	s.mu.Lock()
	defer s.mu.Unlock()
	s.heldMu.Lock()
	set := s.owners[owner]
	if set == nil {
		set = map[string]bool{}
		s.owners[owner] = set
	}
	for _, l := range diffIDs {
		if h := strings.TrimPrefix(l, "sha256:"); !set[h] {
			set[h] = true
			s.held[h]++
		}
	}
	s.heldMu.Unlock()
	for _, l := range diffIDs {
		if _, err := os.Stat(s.layerDir(l)); errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("layer %s is not unpacked (its image was removed): %w", l, errdefs.ErrNotFound)
		} else if err != nil {
			return fmt.Errorf("layer %s: %w", l, err)
		}
	}
	return nil
}

// ReleaseLayers drops every hold of owner; the layers go at the next GC
// if no image refers to them. Releasing an owner that holds nothing
// succeeds.
func (s *Service) ReleaseLayers(owner string) {
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	for h := range s.owners[owner] {
		s.unholdLocked(h)
	}
	delete(s.owners, owner)
}

func isHex(s string) bool {
	if len(s) < 6 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
