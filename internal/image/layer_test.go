package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"

	"github.com/huskrt/husk/internal/atomicfile"
)

// randomFileLayer is a layer of one file of size random bytes, compressed
// with c (gzip or zstd).
func randomFileLayer(t testing.TB, size int, c compression.Compression) v1.Layer {
	t.Helper()
	body := make([]byte, size)
	_, _ = rand.Read(body)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "data", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(size)}); err != nil {
		t.Fatal(err)
	}
	_, _ = tw.Write(body)
	tw.Close()
	b := buf.Bytes()
	opts := []tarball.LayerOption{tarball.WithCompression(c)}
	if c == compression.ZStd {
		opts = append(opts, tarball.WithMediaType(types.OCILayerZStd))
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// randomImage is an image of n layers of one random file each.
func randomImage(t testing.TB, n, size int, c compression.Compression) (v1.Image, []v1.Hash) {
	t.Helper()
	var img v1.Image = empty.Image
	var digests []v1.Hash
	for i := 0; i < n; i++ {
		l := randomFileLayer(t, size, c)
		d, _ := l.Digest()
		digests = append(digests, d)
		var err error
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	return img, digests
}

// layerGets watches the GETs of an image's layer blobs: how many are in
// flight at once, the most ever, and the order they came in.
type layerGets struct {
	layers   map[string]int // digest -> layer index
	mu       sync.Mutex
	inFlight int
	max      int
	order    []int
	changed  chan struct{} // closed and replaced at every change
}

func newLayerGets(digests []v1.Hash) *layerGets {
	g := &layerGets{layers: map[string]int{}, changed: make(chan struct{})}
	for i, d := range digests {
		g.layers[d.String()] = i
	}
	return g
}

// layer is the index of the layer a request fetches, or -1.
func (g *layerGets) layer(r *http.Request) int {
	if r.Method != http.MethodGet {
		return -1
	}
	i := strings.LastIndex(r.URL.Path, "/blobs/")
	if i < 0 {
		return -1
	}
	if n, ok := g.layers[r.URL.Path[i+len("/blobs/"):]]; ok {
		return n
	}
	return -1
}

func (g *layerGets) add(delta, layer int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inFlight += delta
	g.max = max(g.max, g.inFlight)
	if delta > 0 {
		g.order = append(g.order, layer)
	}
	close(g.changed)
	g.changed = make(chan struct{})
}

// waitStarted waits until n layer GETs have started, or the deadline. The
// first n GETs of a pull wait for each other: none of them ends before
// the last one starts, so that a pull fetching fewer at once than it may
// is seen.
func (g *layerGets) waitStarted(n int, deadline time.Time) {
	for {
		g.mu.Lock()
		ok, changed := len(g.order) >= n, g.changed
		g.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-time.After(time.Until(deadline)):
			return
		}
	}
}

// A pull fetches its layers max_concurrent_downloads at a time, started
// lowest first: never more in flight, and as many as it may while there
// are more to fetch. Only the config blob is kept; the layers are
// unpacked as they come.
func TestParallelDownloadsBounded(t *testing.T) {
	needRoot(t)
	const layers = 6
	img, digests := randomImage(t, layers, 256<<10, compression.GZip)
	for _, limit := range []int{1, 3} {
		t.Run(fmt.Sprintf("max %d", limit), func(t *testing.T) {
			gets := newLayerGets(digests)
			deadline := time.Now().Add(10 * time.Second)
			reg := newRegistry(t, func(h http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					n := gets.layer(r)
					if n < 0 {
						h.ServeHTTP(w, r)
						return
					}
					gets.add(1, n)
					defer gets.add(-1, n)
					if n < limit {
						gets.waitStarted(limit, deadline)
					}
					h.ServeHTTP(w, r)
				})
			})
			reg.push(t, "library/many:1", img)
			dir := t.TempDir()
			s, err := New(Options{Root: filepath.Join(dir, "images"), DB: openDB(t, dir), Registries: mirror(reg.host),
				PullProgressTimeout: 10 * time.Second, MaxConcurrentDownloads: limit})
			if err != nil {
				t.Fatal(err)
			}
			id, err := s.Pull(context.Background(), "many:1", nil)
			if err != nil {
				t.Fatal(err)
			}
			gets.mu.Lock()
			maxInFlight, order := gets.max, gets.order
			gets.mu.Unlock()
			if maxInFlight != limit {
				t.Errorf("at most %d layer blobs in flight, want %d (max_concurrent_downloads)", maxInFlight, limit)
			}
			if len(order) != layers {
				t.Errorf("%d layer GETs, want %d", len(order), layers)
			}
			// The first ones started are the lowest layers.
			for i := 0; i < len(order) && i < limit; i++ {
				if order[i] >= limit {
					t.Errorf("GETs in order %v: layer %d started among the first %d", order, order[i], limit)
				}
			}
			if limit == 1 {
				for i, n := range order {
					if n != i {
						t.Errorf("one at a time, the layers came in order %v, want lowest first", order)
						break
					}
				}
			}
			rec, err := s.Resolve(id)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range s.LayerDirs(rec) {
				if fi, err := os.Stat(filepath.Join(d, "data")); err != nil || fi.Size() != 256<<10 {
					t.Errorf("layer %s: %v", d, err)
				}
			}
			blobs, _ := os.ReadDir(filepath.Join(dir, "images", "blobs", "sha256"))
			cfg, _ := img.ConfigName()
			if len(blobs) != 1 || blobs[0].Name() != cfg.Hex {
				t.Errorf("blobs kept: %v; want only the config %s", blobs, cfg.Hex)
			}
		})
	}
}

// A layer is unpacked as its blob arrives: with half of the blob sent and
// the rest held back, its file is already being written. So for every
// compression, and the zstd decoders kept between layers still decode.
func TestUnpackOverlapsDownload(t *testing.T) {
	needRoot(t)
	for _, c := range []compression.Compression{compression.GZip, compression.ZStd} {
		t.Run(string(c), func(t *testing.T) {
			img, digests := randomImage(t, 2, 2<<20, c)
			gets := newLayerGets(digests)
			dir := t.TempDir()
			tmp := filepath.Join(dir, "images", "tmp")
			var overlapped atomic.Int32
			reg := newRegistry(t, func(h http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if gets.layer(r) < 0 {
						h.ServeHTTP(w, r)
						return
					}
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, r)
					for k, v := range rec.Header() {
						w.Header()[k] = v
					}
					w.WriteHeader(rec.Code)
					body := rec.Body.Bytes()
					_, _ = w.Write(body[:len(body)/2])
					w.(http.Flusher).Flush()
					if waitForUnpacking(tmp, 10*time.Second) {
						overlapped.Add(1)
					}
					_, _ = w.Write(body[len(body)/2:])
				})
			})
			reg.push(t, "library/overlap:1", img)
			s, err := New(Options{Root: filepath.Join(dir, "images"), DB: openDB(t, dir), Registries: mirror(reg.host),
				PullProgressTimeout: 20 * time.Second, MaxConcurrentDownloads: 1})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Pull(context.Background(), "overlap:1", nil); err != nil {
				t.Fatal(err)
			}
			if n := overlapped.Load(); n != 2 {
				t.Errorf("%d of 2 layers were being unpacked with half their blob sent", n)
			}
		})
	}
}

// waitForUnpacking waits until a layer being unpacked in tmp has a file
// with content.
func waitForUnpacking(tmp string, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		files, _ := filepath.Glob(filepath.Join(tmp, "layer-*", "data"))
		for _, f := range files {
			if fi, err := os.Stat(f); err == nil && fi.Size() > 0 {
				return true
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return false
}

// When one layer of a pull fails (its blob does not match its digest)
// while others are mid-download, the pull ends at once with that layer's
// error: the others' requests are cancelled, a layer not started yet is
// never fetched, nothing half-written stays and no goroutine is left.
func TestFailedLayerCancelsThePull(t *testing.T) {
	needRoot(t)
	img, digests := randomImage(t, 4, 512<<10, compression.GZip)
	gets := newLayerGets(digests)
	var cancelled atomic.Int32
	reg := newRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n := gets.layer(r)
			if n < 0 {
				h.ServeHTTP(w, r)
				return
			}
			gets.add(1, n)
			defer gets.add(-1, n)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			body := rec.Body.Bytes()
			switch n {
			case 0, 1: // half, then nothing until the client hangs up
				_, _ = w.Write(body[:len(body)/2])
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					cancelled.Add(1)
				case <-time.After(20 * time.Second):
				}
			case 2: // once the others are mid-blob: the right size, the wrong bytes
				gets.waitStarted(3, time.Now().Add(10*time.Second))
				_, _ = w.Write(bytes.Repeat([]byte{0x1f}, len(body)))
			default:
				_, _ = w.Write(body)
			}
		})
	})
	reg.push(t, "library/broken:1", img)
	dir := t.TempDir()
	root := filepath.Join(dir, "images")
	s, err := New(Options{Root: root, DB: openDB(t, dir), Registries: mirror(reg.host),
		PullProgressTimeout: 30 * time.Second, MaxConcurrentDownloads: 3})
	if err != nil {
		t.Fatal(err)
	}
	baseline := idleGoroutines()
	start := time.Now()
	_, err = s.Pull(context.Background(), "broken:1", nil)
	if err == nil || !strings.Contains(err.Error(), "layer "+digests[2].String()) {
		t.Fatalf("pull = %v; want the error of layer %s", err, digests[2])
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the failed pull took %s: the other layers were not cancelled", took)
	}
	waitFor(t, "the held layers' requests to be cancelled", func() bool { return cancelled.Load() == 2 })
	gets.mu.Lock()
	order := gets.order
	gets.mu.Unlock()
	for _, n := range order {
		if n == 3 {
			t.Errorf("layer 3 was fetched (GETs %v) after the pull failed", order)
		}
	}
	for _, sub := range []string{"layers", "tmp"} {
		if ents, _ := os.ReadDir(filepath.Join(root, sub)); len(ents) != 0 {
			t.Errorf("after the failed pull %s/ holds %d entries", sub, len(ents))
		}
	}
	blobs, _ := os.ReadDir(filepath.Join(root, "blobs", "sha256"))
	cfg, _ := img.ConfigName()
	if len(blobs) != 1 || blobs[0].Name() != cfg.Hex {
		t.Errorf("blobs after the failed pull: %v; want only the config", blobs)
	}
	if imgs, _ := s.List(); len(imgs) != 0 {
		t.Errorf("the failed pull left a record: %v", imgs)
	}
	assertGoroutinesReturn(t, baseline)
}

// A pull waiting on a layer another pull is fetching fetches it itself
// when that other pull gives it up (its pull failed elsewhere).
func TestAbandonedSharedLayerIsFetchedAgain(t *testing.T) {
	needRoot(t)
	good := randomFileLayer(t, 64<<10, compression.GZip)
	digest, _ := good.Digest()
	diffID, _ := good.DiffID()
	dir := t.TempDir()
	s, err := New(Options{Root: filepath.Join(dir, "images"), DB: openDB(t, dir)})
	if err != nil {
		t.Fatal(err)
	}
	ctxA, cancelA := context.WithCancelCause(context.Background())
	reading := make(chan struct{})
	stalled := &fakeLayer{Layer: good, open: func() (io.ReadCloser, error) {
		close(reading)
		return io.NopCloser(ctxReader{ctxA}), nil
	}}
	var opened atomic.Int32
	counted := &fakeLayer{Layer: good, open: func() (io.ReadCloser, error) {
		opened.Add(1)
		return good.Compressed()
	}}
	errA, errB := make(chan error, 1), make(chan error, 1)
	go func() { errA <- s.fetchMerged(ctxA, stalled, digest.String(), diffID.String()) }()
	<-reading
	go func() { errB <- s.fetchMerged(context.Background(), counted, digest.String(), diffID.String()) }()
	// B waits on A's fetch once it is in fetchMerged's select.
	waitFor(t, "the second pull to wait on the first one's fetch", func() bool { return goroutinesIn("(*Service).fetchMerged") >= 1 })
	cancelA(errors.New("another layer of pull A failed"))
	if err := <-errA; err == nil {
		t.Error("the abandoned fetch succeeded")
	}
	if err := <-errB; err != nil {
		t.Fatalf("the pull that waited on the abandoned fetch: %v", err)
	}
	if n := opened.Load(); n != 1 {
		t.Errorf("the waiting pull fetched the layer %d times, want once", n)
	}
	if _, err := os.Stat(filepath.Join(s.layerDir(diffID.String()), "data")); err != nil {
		t.Errorf("layer not unpacked: %v", err)
	}
}

// fakeLayer is a layer whose blob comes from open.
type fakeLayer struct {
	v1.Layer
	open func() (io.ReadCloser, error)
}

func (f *fakeLayer) Compressed() (io.ReadCloser, error) { return f.open() }

// ctxReader reads nothing until ctx ends, then fails with its cause.
type ctxReader struct{ ctx context.Context }

func (r ctxReader) Read([]byte) (int, error) {
	<-r.ctx.Done()
	return 0, context.Cause(r.ctx)
}

// goroutinesIn counts the goroutines blocked in a select with fn on their
// stack.
func goroutinesIn(fn string) int {
	var buf bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&buf, 2)
	n := 0
	for _, g := range strings.Split(buf.String(), "\n\n") {
		if strings.Contains(g, " [select") && strings.Contains(g, fn) {
			n++
		}
	}
	return n
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// idleGoroutines is the goroutine count once idle HTTP connections of
// earlier requests (the push) are closed.
func idleGoroutines() int {
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	n := runtime.NumGoroutine()
	for i := 0; i < 20; i++ {
		time.Sleep(10 * time.Millisecond)
		n = min(n, runtime.NumGoroutine())
	}
	return n
}

// assertGoroutinesReturn waits (bounded) for the goroutine count to come
// back to baseline, and names the goroutines that stay.
func assertGoroutinesReturn(t *testing.T, baseline int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			var buf bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
			t.Fatalf("%d goroutines after the pull, %d before:\n%s", runtime.NumGoroutine(), baseline, buf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The layer blobs an older husk kept beside the layers go with the next
// GC, though their image stays: nothing reads them.
func TestOldLayerBlobsCollected(t *testing.T) {
	needRoot(t)
	img, digests := randomImage(t, 2, 4096, compression.GZip)
	reg := newRegistry(t, nil)
	reg.push(t, "library/old:1", img)
	dir := t.TempDir()
	root := filepath.Join(dir, "images")
	db := openDB(t, dir)
	s := newService(t, root, db, mirror(reg.host))
	id, err := s.Pull(context.Background(), "old:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(root, "blobs", "sha256", digests[0].Hex)
	if err := os.WriteFile(old, []byte("an older husk's layer blob"), 0o600); err != nil {
		t.Fatal(err)
	}
	s = newService(t, root, db, mirror(reg.host))
	if err := s.GC(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the old layer blob survived GC: %v", err)
	}
	rec, err := s.Resolve(id)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range s.LayerDirs(rec) {
		if _, err := os.Stat(filepath.Join(d, "data")); err != nil {
			t.Errorf("layer of the image lost: %v", err)
		}
	}
	cfg, _ := img.ConfigName()
	if _, err := os.Stat(filepath.Join(root, "blobs", "sha256", cfg.Hex)); err != nil {
		t.Errorf("config blob lost: %v", err)
	}
}

// A cold pull writes its record only after a syncfs that started once its
// last layer was in place; a warm pull (every layer present, synced) runs
// none.
func TestRecordAfterOneSyncOfItsLayers(t *testing.T) {
	needRoot(t)
	type syncCall struct {
		commits uint64 // layers committed when it started
		records int    // images recorded when it started
	}
	var mu sync.Mutex
	var calls []syncCall
	img, _ := randomImage(t, 4, 64<<10, compression.GZip)
	warm, err := mutate.Config(img, v1.Config{Labels: map[string]string{"warm": "yes"}})
	if err != nil {
		t.Fatal(err)
	}
	reg := newRegistry(t, nil)
	reg.push(t, "library/cold:1", img)
	reg.push(t, "library/warm:1", warm)
	dir := t.TempDir()
	s := newService(t, filepath.Join(dir, "images"), openDB(t, dir), mirror(reg.host))
	s.syncFS = func(path string) error {
		imgs, _ := s.List()
		mu.Lock()
		calls = append(calls, syncCall{s.commits.Load(), len(imgs)})
		mu.Unlock()
		return atomicfile.SyncFS(path)
	}
	if _, err := s.Pull(context.Background(), "cold:1", nil); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	cold := calls
	calls = nil
	mu.Unlock()
	covered := false
	for _, c := range cold {
		covered = covered || (c.commits == 4 && c.records == 0)
	}
	if !covered {
		t.Errorf("syncfs calls of the cold pull %+v: none started with its 4 layers committed and before its record", cold)
	}
	if _, err := s.Pull(context.Background(), "warm:1", nil); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 0 {
		t.Errorf("the warm pull ran %d syncfs", len(calls))
	}
}

// The layers of a pull reuse zstd decoders; once no pull is in flight
// they are dropped.
func TestZstdDecodersReusedWithinPulls(t *testing.T) {
	stream := func(content string) io.Reader {
		var buf bytes.Buffer
		w, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write([]byte(content))
		w.Close()
		return &buf
	}
	var p zstdPool
	p.pullStarted()
	var decoders []*zstd.Decoder
	for _, content := range []string{"first layer", "second layer"} {
		r, err := p.reader(stream(content))
		if err != nil {
			t.Fatal(err)
		}
		decoders = append(decoders, r.(*zstdReader).d)
		if got, err := io.ReadAll(r); err != nil || string(got) != content {
			t.Errorf("decoded %q, %v; want %q", got, err, content)
		}
		r.Close()
	}
	if decoders[0] != decoders[1] {
		t.Error("the second layer got a new decoder")
	}
	p.pullEnded()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free) != 0 || p.pulls != 0 {
		t.Errorf("after the last pull: %d decoders kept, %d pulls", len(p.free), p.pulls)
	}
}
