package image

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/huskrt/husk/internal/atomicfile"
)

// DefaultMaxConcurrentDownloads is how many layers a pull fetches at once
// when Options leave it 0 (docs/benchmarks.md, "Big images", says why).
const DefaultMaxConcurrentDownloads = 3

// Buffer sizes of a layer's stream. The body is read in large steps (one
// syscall per 256 KiB instead of per 4 KiB of net/http's own buffer); a
// zstd frame may ask for a window up to 128 MiB, zstd's own default limit
// (`zstd --memory`), so that a crafted layer cannot make a pull allocate
// zstd's spec maximum.
const (
	bodyBuffer    = 256 << 10
	zstdMaxWindow = 128 << 20
)

// errAbandoned marks a layer fetch whose pull was cancelled (another of its
// layers failed): a pull that waited on it merged fetches it again.
var errAbandoned = errors.New("abandoned: the pull that fetched it failed")

// fetchLayers fetches and unpacks the layers not yet unpacked, at most
// MaxConcurrentDownloads at once, started lowest first. Each layer is
// unpacked as its blob arrives (unpackLayer), so unpacking overlaps the
// downloads and nothing waits for a whole blob; each goes into a dir of its
// own, so the order they finish in does not matter. The first failure
// cancels the others through ctx (the context the image was resolved
// with, which its layer requests carry) and is the error returned.
func (s *Service) fetchLayers(ctx context.Context, cancel context.CancelCauseFunc, p *pulled) error {
	layers, err := p.img.Layers()
	if err != nil {
		return classify(err)
	}
	slots := make(chan struct{}, s.opts.MaxConcurrentDownloads)
	var wg sync.WaitGroup
	for i, l := range layers {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		digest, diffID := p.manifest.Layers[i].Digest.String(), p.configFile.RootFS.DiffIDs[i].String()
		wg.Go(func() {
			defer func() { <-slots }()
			if err := s.fetchMerged(ctx, l, digest, diffID); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return nil
}

// layerFetch is a layer one pull is fetching, which other pulls wait for.
type layerFetch struct {
	done chan struct{}
	err  error // set before done is closed
}

// fetchMerged fetches a layer in the calling goroutine, or waits for the
// pull already fetching it: a layer wanted by several pulls at once is
// fetched once. A pull's own fetches run in its goroutines, so that when
// the pull returns it has stopped writing; a pull that gives up waiting
// (its ctx ends) returns at once. When the pull that fetched the layer
// gives it up, the ones that waited fetch it themselves.
func (s *Service) fetchMerged(ctx context.Context, l v1.Layer, digest, diffID string) error {
	for {
		s.fetchesMu.Lock()
		if f := s.fetches[diffID]; f != nil {
			s.fetchesMu.Unlock()
			select {
			case <-f.done:
				if errors.Is(f.err, errAbandoned) && ctx.Err() == nil {
					continue
				}
				return f.err
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
		f := &layerFetch{done: make(chan struct{})}
		s.fetches[diffID] = f
		s.fetchesMu.Unlock()
		f.err = s.fetchLayerRecovered(ctx, l, digest, diffID)
		s.fetchesMu.Lock()
		delete(s.fetches, diffID)
		s.fetchesMu.Unlock()
		close(f.done)
		return f.err
	}
}

// fetchLayerRecovered is fetchLayer, with a panic logged with its stack
// and made the error of the pulls that wanted the layer: it must not end
// huskd.
func (s *Service) fetchLayerRecovered(ctx context.Context, l v1.Layer, digest, diffID string) (err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("panic", "in", "layer "+digest, "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("layer %s: panic: %v: %w", digest, p, errdefs.ErrInternal)
		}
	}()
	return s.fetchLayer(ctx, l, digest, diffID)
}

// fetchLayer streams a layer's blob into a temporary dir, unpacking it as
// it arrives, and renames the dir into place once both the blob's digest
// and the diff ID are checked, so a failure or a crash never leaves a half
// layer under the name a later pull would trust. The compressed blob is not
// kept: nothing in the CRI reads it again (ImageStatus wants sizes and
// digests, which the record has; the CRI has no push), and writing it
// would double what a pull writes. The layer is made durable later, with
// the others, before the record (syncStore).
func (s *Service) fetchLayer(ctx context.Context, l v1.Layer, digest, diffID string) (err error) {
	dir := s.layerDir(diffID)
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	defer func() {
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("layer %s: %w: %w", digest, errAbandoned, context.Cause(ctx))
		}
	}()
	tmp, err := os.MkdirTemp(filepath.Join(s.opts.Root, "tmp"), "layer-")
	if err != nil {
		return fmt.Errorf("layer %s: %w", digest, err)
	}
	defer os.RemoveAll(tmp)
	// go-containerregistry's reader checks the blob's size and digest
	// as it reads, and fails the read that reaches its end when they are
	// wrong: unpackLayer reads it to the end.
	rc, err := l.Compressed()
	if err != nil {
		return fmt.Errorf("layer %s: %w", digest, classify(err))
	}
	defer rc.Close()
	start := time.Now()
	if err := s.unpackLayer(ctx, rc, tmp, diffID); err != nil {
		return fmt.Errorf("layer %s: %w", digest, classify(err))
	}
	s.log.Debug("layer unpacked", "layer", digest, "diff_id", diffID, "took", time.Since(start))
	// Measured here, where its files are still in the page cache, so that
	// the store's usage never needs a walk (usage.go).
	size, err := measure(tmp)
	if err != nil {
		return fmt.Errorf("layer %s: %w", digest, err)
	}
	// Another pull that unpacked it first wins: same diff ID, same content.
	if err := atomicfile.RenameDir(tmp, dir); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil
		}
		return fmt.Errorf("layer %s: %w", digest, err)
	}
	s.commits.Add(1)
	s.kickWriteback()
	s.usage.add(layerKey(strings.TrimPrefix(diffID, "sha256:")), size)
	s.measureDirs()
	return nil
}

// unpackLayer decompresses blob (gzip, zstd or a plain tar, told apart by
// their magic numbers) and unpacks it into dir, hashing the tar for the
// diff ID on the way; then reads blob to its end, so that a wrong size or
// digest of the blob is reported.
func (s *Service) unpackLayer(ctx context.Context, blob io.Reader, dir, diffID string) error {
	if s.opts.Pulls != nil {
		blob = pulledBytes{r: blob, obs: s.opts.Pulls}
	}
	br := bufio.NewReaderSize(blob, bodyBuffer)
	tarStream, err := s.decompress(br)
	if err != nil {
		return err
	}
	defer tarStream.Close()
	h := sha256.New()
	if err := unpack(ctx, io.TeeReader(tarStream, h), dir); err != nil {
		return err
	}
	// The rest of the stream (tar padding) counts for the diff ID too.
	if _, err := io.Copy(h, tarStream); err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != diffID {
		return fmt.Errorf("uncompressed digest %s, config says %s", got, diffID)
	}
	return nil
}

// decompress returns the tar stream of a layer blob. klauspost/compress
// decodes gzip about twice as fast as compress/gzip; zstd decodes in the
// caller's goroutine (layers already run in parallel with each other).
func (s *Service) decompress(br *bufio.Reader) (io.ReadCloser, error) {
	magic, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		return kgzip.NewReader(br)
	case len(magic) == 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd:
		return s.zstd.reader(br)
	default:
		return io.NopCloser(br), nil
	}
}

// zstdPool lends zstd decoders to the layers of the pulls in flight. A
// decoder holds twice its frame's window (16 MiB at zstd's default
// levels): one per layer would leave a dead one on the heap per layer
// until the next GC, so the layers of a pull reuse them; once no pull is
// in flight they are dropped and their memory handed back to the system,
// so an idle huskd does not keep a pull's peak.
type zstdPool struct {
	mu    sync.Mutex
	pulls int
	free  []*zstd.Decoder
	made  bool // a decoder was made since the pool was last emptied
}

// pullStarted and pullEnded bracket each pull.
func (p *zstdPool) pullStarted() {
	p.mu.Lock()
	p.pulls++
	p.mu.Unlock()
}

func (p *zstdPool) pullEnded() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pulls--; p.pulls > 0 || !p.made {
		return
	}
	p.free, p.made = nil, false
	go debug.FreeOSMemory()
}

func (p *zstdPool) reader(r io.Reader) (io.ReadCloser, error) {
	p.mu.Lock()
	var d *zstd.Decoder
	if n := len(p.free); n > 0 {
		d, p.free = p.free[n-1], p.free[:n-1]
	} else {
		p.made = true
	}
	p.mu.Unlock()
	if d == nil {
		var err error
		d, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(zstdMaxWindow))
		if err != nil {
			return nil, err
		}
	}
	if err := d.Reset(r); err != nil {
		return nil, err
	}
	return &zstdReader{d: d, pool: p}, nil
}

type zstdReader struct {
	d    *zstd.Decoder
	pool *zstdPool
}

func (z *zstdReader) Read(p []byte) (int, error) { return z.d.Read(p) }

// Close gives the decoder back, holding no reference to the stream.
func (z *zstdReader) Close() error {
	if z.d != nil {
		_ = z.d.Reset(nil)
		z.pool.mu.Lock()
		z.pool.free = append(z.pool.free, z.d)
		z.pool.mu.Unlock()
		z.d = nil
	}
	return nil
}

// syncStore makes every layer committed so far durable with one syncfs of
// the store's filesystem; a pull calls it before it writes the record that
// refers to its layers. Until the record exists, nothing durable refers to
// a layer: a crash before it leaves layers (maybe with part of their
// content) that huskd's start removes with what else no record refers to
// (GC), so one syncfs per pull gives the same guarantee as one per layer,
// off the path of the layers. It covers the layers this pull found in
// place too, which another pull may have renamed and not synced yet; it
// returns at once when a syncfs that started after the last commit has
// ended (a warm pull, or the writeback a commit kicked).
func (s *Service) syncStore() error {
	want := s.commits.Load()
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if s.synced >= want {
		return nil
	}
	// What is committed when the syncfs starts is durable when it ends.
	gen := s.commits.Load()
	if err := s.syncFS(filepath.Join(s.opts.Root, "layers")); err != nil {
		return fmt.Errorf("image store: %w", err)
	}
	s.synced = gen
	return nil
}

// kickWriteback runs syncStore in the background after a layer is
// committed, while the pull goes on with its other layers: the disk writes
// a layer back while the next ones are unpacked, and the syncfs before the
// record finds little or nothing left. One runs at a time; commits made
// meanwhile get one more.
func (s *Service) kickWriteback() {
	s.kickMu.Lock()
	defer s.kickMu.Unlock()
	if s.kicking {
		s.kickAgain = true
		return
	}
	s.kicking = true
	go func() {
		for {
			// A failure is the pull's to report, from its own syncStore.
			_ = s.syncStore()
			s.kickMu.Lock()
			if !s.kickAgain {
				s.kicking = false
				s.kickMu.Unlock()
				return
			}
			s.kickAgain = false
			s.kickMu.Unlock()
		}
	}()
}

// pulledBytes tells an observer of the compressed bytes of a layer as
// they are read.
type pulledBytes struct {
	r   io.Reader
	obs PullObserver
}

func (p pulledBytes) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.obs.PulledBytes(int64(n))
	}
	return n, err
}
