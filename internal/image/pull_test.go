package image

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sync/singleflight"
)

// TestMergedReleasesEveryCaller has several callers ask for one key while
// its function runs, and checks that each gets the function's outcome, a
// panic included, and that the next call runs the function again.
func TestMergedReleasesEveryCaller(t *testing.T) {
	errPull := errors.New("registry said no")
	tests := []struct {
		name    string
		fn      func() (string, error)
		want    string
		wantErr func(error) bool
	}{
		{name: "value", fn: func() (string, error) { return "sha256:abc", nil }, want: "sha256:abc",
			wantErr: func(err error) bool { return err == nil }},
		{name: "error", fn: func() (string, error) { return "", errPull },
			wantErr: func(err error) bool { return errors.Is(err, errPull) }},
		{name: "panic", fn: func() (string, error) { panic("index out of range") },
			wantErr: func(err error) bool {
				return errdefs.IsInternal(err) && strings.Contains(err.Error(), "pull busybox: panic: index out of range")
			}},
		{name: "panic with an error", fn: func() (string, error) { panic(errPull) },
			wantErr: func(err error) bool { return errdefs.IsInternal(err) && strings.Contains(err.Error(), errPull.Error()) }},
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	const callers = 8
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var g singleflight.Group
			var calls atomic.Int32
			entered, release := make(chan struct{}, callers), make(chan struct{})
			fn := func() (string, error) {
				calls.Add(1)
				entered <- struct{}{}
				<-release
				return tt.fn()
			}
			type result struct {
				v   string
				err error
			}
			results := make(chan result, callers)
			call := func() {
				v, err := merged(context.Background(), &g, "key", "pull busybox", log, fn)
				results <- result{v, err}
			}
			go call()
			<-entered // the others join a call that is running
			for i := 1; i < callers; i++ {
				go call()
			}
			close(release)
			deadline := time.After(10 * time.Second)
			for i := 0; i < callers; i++ {
				select {
				case r := <-results:
					if r.v != tt.want || !tt.wantErr(r.err) {
						t.Errorf("caller got %q, %v", r.v, r.err)
					}
				case <-deadline:
					t.Fatalf("%d of %d callers still waiting", callers-i, callers)
				}
			}
			if n := calls.Load(); n < 1 || n > callers {
				t.Errorf("fn ran %d times for %d callers", n, callers)
			}
			// Nothing is cached, a failure least of all.
			before := calls.Load()
			if _, err := merged(context.Background(), &g, "key", "pull busybox", log, fn); !tt.wantErr(err) {
				t.Errorf("next call: %v", err)
			}
			if calls.Load() != before+1 {
				t.Error("the next call did not run fn")
			}
		})
	}
}

// TestMergedCallerGivesUp: a caller whose context ends returns at once;
// the call goes on and the others get its result.
func TestMergedCallerGivesUp(t *testing.T) {
	var g singleflight.Group
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	entered, release := make(chan struct{}), make(chan struct{})
	fn := func() (string, error) { close(entered); <-release; return "done", nil }
	other := make(chan string, 1)
	go func() {
		v, _ := merged(context.Background(), &g, "key", "pull", log, fn)
		other <- v
	}()
	<-entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := merged(ctx, &g, "key", "pull", log, fn); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller got %v, want context.Canceled", err)
	}
	close(release)
	select {
	case v := <-other:
		if v != "done" {
			t.Errorf("other caller got %q", v)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("other caller still waiting")
	}
}

// TestTemporaryBlobs: a blob being written lives beside its final name;
// GC (a RemoveImage during a pull) leaves it, a restart removes it.
func TestTemporaryBlobs(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	root := filepath.Join(dir, "images")
	s := newService(t, root, db, nil)
	const digest = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae" // of "foo"
	blobs := filepath.Join(root, "blobs", "sha256")
	temp := func() []string {
		ents, err := os.ReadDir(blobs)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range ents {
			out = append(out, e.Name())
		}
		return out
	}
	gcDuringWrite := &gcReader{r: strings.NewReader("foo"), gc: func() {
		if _, err := s.gc(); err != nil {
			t.Error(err)
		}
		if names := temp(); len(names) != 1 || !strings.HasPrefix(names[0], ".") {
			t.Errorf("while writing, GC left %v; want the temporary blob", names)
		}
	}}
	if err := s.writeBlob(digest, gcDuringWrite); err != nil {
		t.Fatal(err)
	}
	if names := temp(); len(names) != 1 || names[0] != strings.TrimPrefix(digest, "sha256:") {
		t.Errorf("after writing: %v", names)
	}
	if err := s.writeBlob("sha256:"+strings.Repeat("0", 64), strings.NewReader("not that")); err == nil {
		t.Error("a blob that does not match its digest was kept")
	}
	if names := temp(); len(names) != 1 {
		t.Errorf("a failed write left %v", names)
	}
	// A crash mid-write leaves a temporary blob: the next start removes it.
	crashed := filepath.Join(blobs, ".abc.tmp-1")
	if err := os.WriteFile(crashed, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	newService(t, root, db, nil)
	if _, err := os.Stat(crashed); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary blob survived a restart: %v", err)
	}
}

// gcReader runs gc once, after the first read: while the blob is written.
type gcReader struct {
	r  io.Reader
	gc func()
}

func (g *gcReader) Read(p []byte) (int, error) {
	n, err := g.r.Read(p)
	if g.gc != nil && n > 0 {
		g.gc()
		g.gc = nil
	}
	return n, err
}
