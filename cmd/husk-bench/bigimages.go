package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Issue 15's big images: layers of incompressible data (one file each),
// compressed with gzip or zstd at their default levels, pulled cold by
// both runtimes and written by the floor, round after round.

// bigImage is one big image of the bench registry.
type bigImage struct {
	compression string // "gzip" or "zstd"
	ref         string // docker.io/bench/big-<compression>:1
	layers      []*benchLayer
}

// benchLayer is a layer built in memory; its blob is served by the bench
// registry from this very slice, and the floor reads it too.
type benchLayer struct {
	blob           []byte
	digest, diffID v1.Hash
	mediaType      types.MediaType
}

func (l *benchLayer) Digest() (v1.Hash, error) { return l.digest, nil }
func (l *benchLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }
func (l *benchLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.blob)), nil
}
func (l *benchLayer) Uncompressed() (io.ReadCloser, error) {
	return nil, fmt.Errorf("bench layer %s: uncompressed not kept", l.digest)
}
func (l *benchLayer) Size() (int64, error)                { return int64(len(l.blob)), nil }
func (l *benchLayer) MediaType() (types.MediaType, error) { return l.mediaType, nil }

// benchBlobs is the bench registry's blob store: in memory, with the big
// layers put in directly (no upload, no copy: the push finds them there).
type benchBlobs struct {
	mu sync.Mutex
	m  map[v1.Hash][]byte
	// gets counts the GETs of each big layer: a pull that is not cold
	// fetches fewer than all of them.
	gets map[v1.Hash]*atomic.Int64
}

func newBenchBlobs() *benchBlobs {
	return &benchBlobs{m: map[v1.Hash][]byte{}, gets: map[v1.Hash]*atomic.Int64{}}
}

func (b *benchBlobs) blob(h v1.Hash) ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.m[h]
	return v, ok
}

func (b *benchBlobs) Stat(_ context.Context, _ string, h v1.Hash) (int64, error) {
	v, ok := b.blob(h)
	if !ok {
		return 0, registry.ErrNotFound
	}
	return int64(len(v)), nil
}

func (b *benchBlobs) Get(_ context.Context, _ string, h v1.Hash) (io.ReadCloser, error) {
	v, ok := b.blob(h)
	if !ok {
		return nil, registry.ErrNotFound
	}
	if c := b.gets[h]; c != nil {
		c.Add(1)
	}
	return io.NopCloser(bytes.NewReader(v)), nil
}

func (b *benchBlobs) Put(_ context.Context, _ string, h v1.Hash, rc io.ReadCloser) error {
	defer rc.Close()
	v, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.m[h] = v
	b.mu.Unlock()
	return nil
}

// addBig puts a big layer in the store and counts its GETs; only before
// the registry serves.
func (b *benchBlobs) addBig(l *benchLayer) {
	b.m[l.digest] = l.blob
	b.gets[l.digest] = &atomic.Int64{}
}

// fetched is how many of img's layers were fetched since the last call.
func (b *benchBlobs) fetched(img *bigImage) int {
	n := 0
	for _, l := range img.layers {
		if b.gets[l.digest].Swap(0) > 0 {
			n++
		}
	}
	return n
}

// buildBigImages makes and pushes a gzip and a zstd image of layers of
// mib MiB each, with different random content.
func (b *benchImages) buildBigImages(layers, mib int) error {
	fmt.Fprintf(os.Stderr, "husk-bench: building 2 images of %d x %d MiB (gzip, zstd)\n", layers, mib)
	for seed, c := range []string{"gzip", "zstd"} {
		img := &bigImage{compression: c, ref: "docker.io/bench/big-" + c + ":1"}
		var base v1.Image = empty.Image
		for i := 0; i < layers; i++ {
			l, err := randomLayer(c, int64(mib)<<20, uint64(seed*1000+i))
			if err != nil {
				return err
			}
			b.blobs.addBig(l)
			img.layers = append(img.layers, l)
			if base, err = mutate.AppendLayers(base, l); err != nil {
				return err
			}
		}
		tag, err := name.NewTag(b.host+"/bench/big-"+c+":1", name.Insecure)
		if err != nil {
			return err
		}
		if err := remote.Write(tag, base); err != nil {
			return fmt.Errorf("push big %s image: %w", c, err)
		}
		b.big = append(b.big, img)
	}
	return nil
}

// randomLayer is a layer of one file of size random bytes, compressed
// with c at its default level.
func randomLayer(c string, size int64, seed uint64) (*benchLayer, error) {
	var blob bytes.Buffer
	blob.Grow(int(size + size/64 + 4096))
	var zw io.WriteCloser
	var err error
	mt := types.DockerLayer
	if c == "zstd" {
		zw, err = zstd.NewWriter(&blob)
		mt = types.OCILayerZStd
	} else {
		zw, err = kgzip.NewWriterLevel(&blob, kgzip.DefaultCompression)
	}
	if err != nil {
		return nil, err
	}
	diff := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(zw, diff))
	if err := tw.WriteHeader(&tar.Header{Name: "data", Typeflag: tar.TypeReg, Mode: 0o644, Size: size}); err != nil {
		return nil, err
	}
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	rng := rand.NewChaCha8(key)
	chunk := make([]byte, 1<<20)
	for left := size; left > 0; left -= int64(len(chunk)) {
		_, _ = rng.Read(chunk)
		if _, err := tw.Write(chunk[:min(left, int64(len(chunk)))]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	l := &benchLayer{blob: blob.Bytes(), mediaType: mt}
	l.digest = v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256(l.blob))}
	l.diffID = v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", diff.Sum(nil))}
	return l, nil
}

// bigRows names the rows of the big image scenario for one compression,
// in the order they are printed.
type bigRows struct {
	pull, vsFloor, vsHashed, floorPar, floorSeq, syncfs, hashed, cpu, floorCPU, hashedCPU, rssBefore, rss string
}

func newBigRows(c string, layers, mib int) bigRows {
	return bigRows{
		pull:      fmt.Sprintf("PullImage %dx%d MiB %s", layers, mib, c),
		vsFloor:   "  " + c + ": pull / floor",
		vsHashed:  "  " + c + ": pull / hashing floor",
		floorPar:  "  " + c + ": floor, parallel",
		floorSeq:  "  " + c + ": floor, sequential",
		syncfs:    "  " + c + ": floor's syncfs",
		hashed:    "  " + c + ": floor + 2 sha256",
		cpu:       "  " + c + ": daemon CPU time",
		floorCPU:  "  " + c + ": floor CPU time",
		hashedCPU: "  " + c + ": floor + 2 sha256 CPU",
		rssBefore: "  " + c + ": daemon RSS before",
		rss:       "  " + c + ": daemon peak RSS",
	}
}

func (r bigRows) names() []string {
	return []string{r.pull, r.vsFloor, r.vsHashed, r.floorPar, r.floorSeq, r.syncfs, r.hashed, r.cpu, r.floorCPU, r.hashedCPU, r.rssBefore, r.rss}
}

// benchBigImages runs both runtimes side by side and, round after round,
// pulls each big image cold on each (the image removed and its blobs and
// layers collected after each pull), then writes its layers as the floor
// does; the three are taken in laneOrder, and the filesystem is synced
// between them so that none pays for another's writeback. Each pull must
// fetch every layer.
func benchBigImages(ctx context.Context, o options, imgs *benchImages, add func(name, unit, side string, target, limit float64, v ...float64)) error {
	var rts []*runtimeUnderTest
	defer func() {
		for _, r := range rts {
			r.close(o.keep)
		}
	}()
	for i, side := range []string{"containerd", "husk"} {
		r, err := startRuntime(ctx, side, o, i, false)
		if err != nil {
			return fmt.Errorf("%s: %w", side, err)
		}
		rts = append(rts, r)
	}
	floorDir := filepath.Join(rts[1].dir, "floor")
	for _, img := range imgs.big {
		rows := newBigRows(img.compression, len(img.layers), o.bigMiB)
		fmt.Fprintf(os.Stderr, "husk-bench: %d cold pulls of %s on each runtime, and the floor\n", o.bigN, img.ref)
		for round := 0; round < o.bigN; round++ {
			times := map[string]float64{}
			steps := []string{"containerd", "husk", "floor"}
			for _, k := range laneOrder(len(steps), round) {
				step := steps[k]
				unix.Sync()
				if step == "floor" {
					f, err := floor(floorDir, img)
					if err != nil {
						return fmt.Errorf("floor: %w", err)
					}
					times["floor"], times["hashed"] = min(f.par, f.seq), f.hashed
					add(rows.floorPar, "ms", "husk", 0, 0, f.par)
					add(rows.floorSeq, "ms", "husk", 0, 0, f.seq)
					add(rows.syncfs, "ms", "husk", 0, 0, f.syncfs)
					add(rows.hashed, "ms", "husk", 0, 0, f.hashed)
					add(rows.floorCPU, "ms", "husk", 0, 0, f.cpu)
					add(rows.hashedCPU, "ms", "husk", 0, 0, f.hashedCPU)
					continue
				}
				r := rts[0]
				if step == "husk" {
					r = rts[1]
				}
				p, err := coldPull(ctx, r, imgs.blobs, img)
				if err != nil {
					return fmt.Errorf("%s: %w", step, err)
				}
				times[step] = p.ms
				add(rows.pull, "ms", step, 0.6, 0, p.ms)
				add(rows.cpu, "ms", step, 0, 0, p.cpu)
				add(rows.rssBefore, "KiB", step, 0, 0, p.rssBefore)
				add(rows.rss, "KiB", step, 0, 0, p.peakRSS)
			}
			for _, side := range []string{"containerd", "husk"} {
				add(rows.vsFloor, "x", side, 0, 1.5, times[side]/times["floor"])
				add(rows.vsHashed, "x", side, 0, 0, times[side]/times["hashed"])
			}
		}
	}
	return nil
}

// pullFigures are one cold pull's: its time, the daemon's CPU time
// during it (user and system), its RSS before and its peak RSS during it
// (VmHWM, reset before the pull).
type pullFigures struct{ ms, cpu, rssBefore, peakRSS float64 }

// coldPull pulls img on r, checks that every layer was fetched, removes
// it again and waits until r has collected its blobs and layers.
func coldPull(ctx context.Context, r *runtimeUnderTest, blobs *benchBlobs, img *bigImage) (pullFigures, error) {
	var f pullFigures
	images := runtimeapi.NewImageServiceClient(r.conn)
	pid := r.daemon.Process.Pid
	before, err := r.storeEntries()
	if err != nil {
		return f, err
	}
	blobs.fetched(img)
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		return f, fmt.Errorf("reset the peak RSS: %w", err)
	}
	f.rssBefore = statusField(pid, "VmRSS:")
	cpu := processCPU(pid)
	t := time.Now()
	resp, err := images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: img.ref}})
	f.ms = ms(time.Since(t))
	f.cpu = ms(processCPU(pid) - cpu)
	f.peakRSS = statusField(pid, "VmHWM:")
	if err != nil {
		return f, fmt.Errorf("pull %s: %w", img.ref, err)
	}
	if n := blobs.fetched(img); n != len(img.layers) {
		return f, fmt.Errorf("pull %s fetched %d of its %d layers: not cold", img.ref, n, len(img.layers))
	}
	if _, err := images.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: resp.ImageRef}}); err != nil {
		return f, fmt.Errorf("remove %s: %w", img.ref, err)
	}
	// containerd removes snapshots in the background after its GC.
	deadline := time.Now().Add(time.Minute)
	for {
		after, err := r.storeEntries()
		if err != nil {
			return f, err
		}
		if after <= before {
			return f, nil
		}
		if time.Now().After(deadline) {
			return f, fmt.Errorf("%s: %d blobs and layers left after removing %s (%d before the pull)", r.side, after, img.ref, before)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// processCPU is the user and system time pid has used.
func processCPU(pid int) time.Duration {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	// The fields after the command, which is in parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

// storeEntries counts the blobs and unpacked layers in r's image store.
func (r *runtimeUnderTest) storeEntries() (int, error) {
	dirs := []string{"root/images/blobs/sha256", "root/images/layers"}
	if r.side == "containerd" {
		dirs = []string{"root/io.containerd.content.v1.content/blobs/sha256", "root/io.containerd.snapshotter.v1.overlayfs/snapshots"}
	}
	n := 0
	for _, d := range dirs {
		ents, err := os.ReadDir(filepath.Join(r.dir, d))
		if err != nil {
			return 0, err
		}
		n += len(ents)
	}
	return n, nil
}

// floorFigures are one round's floor, in ms: the parallel run (with its
// syncfs), the sequential one (with its own), the parallel run's syncfs
// alone and CPU time (user and system), and the parallel run again with
// both sha256 a verifying pull computes (of the blob and of the tar).
type floorFigures struct{ par, seq, syncfs, cpu, hashed, hashedCPU float64 }

// floor is what this machine takes to decompress the image's layers and
// write their files into a directory of the filesystem the runtimes'
// stores are on, in this process with nothing else going on: the layers
// on as many goroutines as there are CPUs, then one after the other, then
// on as many goroutines again with the two sha256 of a verifying pull,
// each run followed by the syncfs that makes it durable.
func floor(dir string, img *bigImage) (floorFigures, error) {
	run := func(workers int, hash bool) (total, syncfs, cpu time.Duration, err error) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return 0, 0, 0, err
		}
		defer os.RemoveAll(dir)
		cpuBefore := selfCPU()
		start := time.Now()
		next := make(chan int, len(img.layers))
		for i := range img.layers {
			next <- i
		}
		close(next)
		errs := make(chan error, workers)
		for w := 0; w < workers; w++ {
			go func() {
				for i := range next {
					if err := writeLayer(filepath.Join(dir, fmt.Sprint(i)), img.layers[i].blob, img.compression, hash); err != nil {
						errs <- err
						return
					}
				}
				errs <- nil
			}()
		}
		for w := 0; w < workers; w++ {
			if e := <-errs; e != nil && err == nil {
				err = e
			}
		}
		if err != nil {
			return 0, 0, 0, err
		}
		t := time.Now()
		if err := syncFS(dir); err != nil {
			return 0, 0, 0, err
		}
		return time.Since(start), time.Since(t), selfCPU() - cpuBefore, nil
	}
	var f floorFigures
	p, s, cpu, err := run(runtime.NumCPU(), false)
	if err != nil {
		return f, err
	}
	unix.Sync()
	q, _, _, err := run(1, false)
	if err != nil {
		return f, err
	}
	unix.Sync()
	h, _, hcpu, err := run(runtime.NumCPU(), true)
	if err != nil {
		return f, err
	}
	return floorFigures{par: ms(p), seq: ms(q), syncfs: ms(s), cpu: ms(cpu), hashed: ms(h), hashedCPU: ms(hcpu)}, nil
}

// selfCPU is the user and system time this process has used.
func selfCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// writeLayer decompresses blob and writes the files of its tar into dir:
// no checks, no metadata but the mode; with hash, the blob and the tar
// are hashed on the way, as a verifying pull does.
func writeLayer(dir string, blob []byte, compression string, hash bool) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	var in io.Reader = bytes.NewReader(blob)
	digest, diffID := sha256.New(), sha256.New()
	if hash {
		in = io.TeeReader(in, digest)
	}
	var r io.Reader
	switch compression {
	case "zstd":
		d, err := zstd.NewReader(in, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return err
		}
		defer d.Close()
		r = d
	default:
		z, err := kgzip.NewReader(in)
		if err != nil {
			return err
		}
		r = z
	}
	if hash {
		r = io.TeeReader(r, diffID)
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			if hash {
				_, _ = io.Copy(io.Discard, r)
				digest.Sum(nil)
				diffID.Sum(nil)
			}
			return nil
		}
		if err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg || strings.Contains(h.Name, "/") {
			return fmt.Errorf("floor: unexpected entry %q", h.Name)
		}
		f, err := os.OpenFile(filepath.Join(dir, h.Name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, os.FileMode(h.Mode))
		if err != nil {
			return err
		}
		_, err = io.Copy(f, tr)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
}

func syncFS(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Syncfs(int(d.Fd()))
}
