package image

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	bolt "go.etcd.io/bbolt"

	"github.com/huskrt/husk/internal/stats"
)

// crashChildEnv makes the test binary a huskd stand-in that pulls
// crash:1 into the store under its value until it is killed.
const crashChildEnv = "HUSK_IMAGE_CRASH_CHILD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir, os.Getenv("HUSK_IMAGE_CRASH_REGISTRY"))
		return
	}
	os.Exit(m.Run())
}

func crashChild(dir, registry string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(2)
	}
	db, err := bolt.Open(filepath.Join(dir, "db"), 0o600, nil)
	if err != nil {
		fail(err)
	}
	s, err := New(Options{Root: filepath.Join(dir, "images"), DB: db, Registries: mirror(registry)})
	if err != nil {
		fail(err)
	}
	_, err = s.Pull(context.Background(), "crash:1", nil)
	if err == nil && os.Getenv(crashAfterPullEnv) != "" {
		fmt.Println("pulled")
		time.Sleep(time.Hour) // until it is killed
	}
	fail(fmt.Errorf("the pull returned (%v); it should have been killed first", err))
}

// crashAfterPullEnv makes the crash child print "pulled" once its pull
// returned, and wait to be killed.
const crashAfterPullEnv = "HUSK_IMAGE_CRASH_AFTER_PULL"

// startCrashChild starts the crash child on dir against registry; its
// output goes to the file it returns, which the test can poll.
func startCrashChild(t *testing.T, dir, registry string, env ...string) (*exec.Cmd, string) {
	t.Helper()
	out, err := os.Create(filepath.Join(dir, "child.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(append(os.Environ(), crashChildEnv+"="+dir, "HUSK_IMAGE_CRASH_REGISTRY="+registry), env...)
	child.Stdout, child.Stderr = out, out
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = child.Process.Kill()
		_ = child.Wait()
	})
	return child, out.Name()
}

// huskd killed with SIGKILL straight after a pull returned (its one
// syncfs run, its record written): the next start serves the image with
// every layer whole, its GC keeps them, and a second pull fetches nothing.
func TestCrashAfterPullKeepsItsLayers(t *testing.T) {
	needRoot(t)
	img, digests := randomImage(t, 3, 256<<10, compression.GZip)
	gets := newLayerGets(digests)
	fetched := 0
	var mu sync.Mutex
	reg := newRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if gets.layer(r) >= 0 {
				mu.Lock()
				fetched++
				mu.Unlock()
			}
			h.ServeHTTP(w, r)
		})
	})
	reg.push(t, "library/crash:1", img)
	dir := t.TempDir()
	root := filepath.Join(dir, "images")

	child, outFile := startCrashChild(t, dir, reg.host, crashAfterPullEnv+"=1")
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _ := os.ReadFile(outFile)
		if strings.Contains(string(out), "pulled") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the child did not finish its pull:\n%s", out)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()

	s, err := New(Options{Root: root, DB: openDB(t, dir), Registries: mirror(reg.host), PullProgressTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.GC(); err != nil {
		t.Fatal(err)
	}
	rec, err := s.Resolve("crash:1")
	if err != nil {
		t.Fatalf("Resolve after the restart: %v", err)
	}
	layers, _ := img.Layers()
	dirs := s.LayerDirs(rec)
	if len(dirs) != len(layers) {
		t.Fatalf("the image has %d layer dirs, want %d", len(dirs), len(layers))
	}
	for i, l := range layers {
		got, err := os.ReadFile(filepath.Join(dirs[i], "data"))
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		if want := layerData(t, l); !bytes.Equal(got, want) {
			t.Errorf("layer %d: %d bytes on disk differ from the %d of the image", i, len(got), len(want))
		}
	}
	if left, _ := os.ReadDir(filepath.Join(root, "tmp")); len(left) != 0 {
		t.Errorf("tmp/ holds %d entries after the restart", len(left))
	}
	mu.Lock()
	before := fetched
	mu.Unlock()
	if _, err := s.Pull(context.Background(), "crash:1", nil); err != nil {
		t.Fatalf("pull after the restart: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if fetched != before {
		t.Errorf("the pull after the restart fetched %d layers again", fetched-before)
	}
}

// layerData is the content of the one file of a randomFileLayer.
func layerData(t *testing.T, l v1.Layer) []byte {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	if _, err := tr.Next(); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(tr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// huskd killed mid-pull, with layers renamed into place (not synced: the
// pull syncs once, before its record) and one half unpacked: the next
// start's GC leaves nothing of the pull, nothing is served, the store's
// usage matches what is on disk, and the image pulls again.
func TestCrashBeforeRecordLeavesNothing(t *testing.T) {
	needRoot(t)
	img, digests := randomImage(t, 3, 256<<10, compression.GZip)
	gets := newLayerGets(digests)
	var hold atomic.Bool
	hold.Store(true)
	reg := newRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if gets.layer(r) != 2 || !hold.Load() {
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
			<-r.Context().Done()
		})
	})
	reg.push(t, "library/crash:1", img)
	dir := t.TempDir()
	root := filepath.Join(dir, "images")

	child, outFile := startCrashChild(t, dir, reg.host)
	output := func() string { b, _ := os.ReadFile(outFile); return string(b) }
	entries := func(sub string) []string {
		ents, _ := os.ReadDir(filepath.Join(root, sub))
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return names
	}
	halfUnpacked := func() bool {
		files, _ := filepath.Glob(filepath.Join(root, "tmp", "layer-*", "data"))
		for _, f := range files {
			if fi, err := os.Stat(f); err == nil && fi.Size() > 0 {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(entries("layers")) < 2 || !halfUnpacked() {
		if time.Now().After(deadline) {
			t.Fatalf("the child did not get to two layers and a half: layers %v, tmp %v:\n%s", entries("layers"), entries("tmp"), output())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()

	db := openDB(t, dir)
	s, err := New(Options{Root: root, DB: db, Registries: mirror(reg.host), PullProgressTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.GC(); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"layers", "tmp", "blobs/sha256"} {
		if left := entries(sub); len(left) != 0 {
			t.Errorf("after the restart %s/ holds %v", sub, left)
		}
	}
	if imgs, _ := s.List(); len(imgs) != 0 {
		t.Errorf("images after the restart: %v", imgs)
	}
	if _, err := s.Resolve("crash:1"); !errdefs.IsNotFound(err) {
		t.Errorf("Resolve after the restart = %v, want NotFound", err)
	}
	bytes, inodes, _, _ := s.FsInfo()
	if wb, wi, err := stats.DiskUsage(root); err != nil || wb != bytes || wi != inodes {
		t.Errorf("FsInfo %d bytes %d inodes, the store holds %d bytes %d inodes (%v)", bytes, inodes, wb, wi, err)
	}

	hold.Store(false)
	id, err := s.Pull(context.Background(), "crash:1", nil)
	if err != nil {
		t.Fatalf("pull after the restart: %v", err)
	}
	rec, err := s.Resolve(id)
	if err != nil || len(s.LayerDirs(rec)) != 3 {
		t.Fatalf("image after the pull: %v, %v", rec, err)
	}
}
