package image

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/compression"
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
	fail(fmt.Errorf("the pull returned (%v); it should have been killed first", err))
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

	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), crashChildEnv+"="+dir, "HUSK_IMAGE_CRASH_REGISTRY="+reg.host)
	var out strings.Builder
	child.Stdout, child.Stderr = &out, &out
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = child.Process.Kill()
			_ = child.Wait()
		}
	})
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
			t.Fatalf("the child did not get to two layers and a half: layers %v, tmp %v:\n%s", entries("layers"), entries("tmp"), out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed = true
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
