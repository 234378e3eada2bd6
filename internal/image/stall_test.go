package image

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// stallRegistry is an in-process registry whose answers a test can hold
// back once armed: stall decides, per request, whether to answer it,
// answer nothing, or send the headers and part of the body and then
// nothing. With token, it wants a bearer token from its /token.
type stallRegistry struct {
	*httptest.Server
	host  string
	armed atomic.Bool
	image atomic.Pointer[stallImage]
	// release ends every stalled handler (at cleanup), in case a client
	// never hangs up.
	release chan struct{}
}

type stallMode int

const (
	answer        stallMode = iota
	noAnswer                // accept the request, never send a byte
	halfBody                // headers and half the body, then nothing
	slowButSteady           // the whole body, 64 bytes every 10 ms: well within the timeout
)

func newStallRegistry(t *testing.T, token bool, stall func(*http.Request, *stallImage) stallMode) *stallRegistry {
	t.Helper()
	reg := registry.New(registry.Logger(nopLogger()))
	s := &stallRegistry{release: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mode := answer
		if s.armed.Load() {
			mode = stall(r, s.image.Load())
		}
		switch {
		case mode == noAnswer:
			s.hang(r)
		case token && r.URL.Path == "/token":
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"token":"t0ken","expires_in":300}`))
		case token && s.armed.Load() && r.Header.Get("Authorization") != "Bearer t0ken":
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+s.URL+`/token",service="test"`)
			w.WriteHeader(http.StatusUnauthorized)
		case mode == answer:
			reg.ServeHTTP(w, r)
		default:
			s.serveSlowly(w, r, reg, mode)
		}
	}))
	t.Cleanup(func() {
		close(s.release)
		s.Close()
	})
	s.host = strings.TrimPrefix(s.URL, "http://")
	return s
}

// serveSlowly sends the registry's answer, then half its body and
// nothing more (halfBody), or all of it in small steps (slowButSteady).
func (s *stallRegistry) serveSlowly(w http.ResponseWriter, r *http.Request, reg http.Handler, mode stallMode) {
	rec := httptest.NewRecorder()
	reg.ServeHTTP(rec, r)
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	body := rec.Body.Bytes()
	if mode == halfBody {
		_, _ = w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		s.hang(r)
		return
	}
	for len(body) > 0 {
		n := min(64, len(body))
		if _, err := w.Write(body[:n]); err != nil {
			return
		}
		w.(http.Flusher).Flush()
		body = body[n:]
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *stallRegistry) hang(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-s.release:
	}
}

// stallImage is a one-layer image: its manifest, config and layer.
type stallImage struct {
	img          v1.Image
	config, blob v1.Hash
}

func pushStallImage(t *testing.T, host, repoTag string, layerSize int64) stallImage {
	t.Helper()
	img, err := random.Image(layerSize, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewTag(host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	cfg, _ := img.ConfigName()
	layers, _ := img.Layers()
	blob, _ := layers[0].Digest()
	return stallImage{img: img, config: cfg, blob: blob}
}

// A registry that accepts a request of a pull and never answers it, or
// stops in the middle of a body, fails the pull within the progress
// timeout, naming what stalled; nothing half-written stays, and no
// goroutine is left behind. A slow download that keeps making progress
// is not a stall, however long it takes.
func TestPullStalls(t *testing.T) {
	const timeout = 300 * time.Millisecond
	tests := []struct {
		name string
		// stall picks the request that stalls, once the image is pushed.
		stall func(r *http.Request, im *stallImage) stallMode
		token bool // the registry wants a bearer token from /token
		// wantErr names what stalled, in the pull's error; nil for a
		// pull that succeeds.
		wantErr  func(im *stallImage) string
		slowPull bool // the pull must take longer than the timeout
	}{
		{name: "manifest never answered", wantErr: func(*stallImage) string { return "manifest library/stall:1" },
			stall: func(r *http.Request, _ *stallImage) stallMode {
				return when(strings.Contains(r.URL.Path, "/manifests/"), noAnswer)
			}},
		{name: "config never answered", wantErr: func(im *stallImage) string { return "blob " + im.config.String() },
			stall: func(r *http.Request, im *stallImage) stallMode {
				return when(strings.HasSuffix(r.URL.Path, "/blobs/"+im.config.String()), noAnswer)
			}},
		{name: "layer stops mid-blob", wantErr: func(im *stallImage) string { return "blob " + im.blob.String() },
			stall: func(r *http.Request, im *stallImage) stallMode {
				return when(strings.HasSuffix(r.URL.Path, "/blobs/"+im.blob.String()), halfBody)
			}},
		{name: "token never answered", token: true, wantErr: func(*stallImage) string { return "/token" },
			stall: func(r *http.Request, _ *stallImage) stallMode { return when(r.URL.Path == "/token", noAnswer) }},
		{name: "slow layer that makes progress", slowPull: true,
			stall: func(r *http.Request, im *stallImage) stallMode {
				return when(strings.HasSuffix(r.URL.Path, "/blobs/"+im.blob.String()), slowButSteady)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := newStallRegistry(t, tt.token, tt.stall)
			im := pushStallImage(t, reg.host, "library/stall:1", 4096)
			reg.image.Store(&im)
			reg.armed.Store(true)
			dir := t.TempDir()
			s, err := New(Options{Root: filepath.Join(dir, "images"), DB: openDB(t, dir), Registries: mirror(reg.host),
				PullProgressTimeout: timeout})
			if err != nil {
				t.Fatal(err)
			}
			baseline := settledGoroutines()

			start := time.Now()
			done := make(chan error, 1)
			go func() {
				_, err := s.Pull(context.Background(), "stall:1", nil)
				done <- err
			}()
			var pullErr error
			select {
			case pullErr = <-done:
			case <-time.After(30 * timeout):
				t.Fatalf("PullImage still running %s after it started (progress timeout %s)", 30*timeout, timeout)
			}
			took := time.Since(start)
			if tt.wantErr == nil {
				if pullErr != nil {
					t.Fatalf("pull: %v", pullErr)
				}
				if tt.slowPull && took < timeout {
					t.Errorf("the slow pull took %s, less than the timeout %s: it tested nothing", took, timeout)
				}
			} else {
				if want := tt.wantErr(&im); pullErr == nil || !strings.Contains(pullErr.Error(), want) || !strings.Contains(pullErr.Error(), "no progress for") {
					t.Fatalf("pull = %v; want an error naming %q and the stall", pullErr, want)
				}
				if took > 10*timeout {
					t.Errorf("the stalled pull took %s; want about the timeout, %s", took, timeout)
				}
				assertNothingHalfWritten(t, filepath.Join(dir, "images"), im)
				if imgs, _ := s.List(); len(imgs) != 0 {
					t.Errorf("a failed pull left a record: %v", imgs)
				}
			}
			assertGoroutinesBack(t, baseline)
		})
	}
}

func when(cond bool, mode stallMode) stallMode {
	if cond {
		return mode
	}
	return answer
}

// assertNothingHalfWritten: no temporary blob, no blob of the layer, no
// layer dir and nothing in tmp/.
func assertNothingHalfWritten(t *testing.T, root string, im stallImage) {
	t.Helper()
	for _, sub := range []string{"blobs/sha256", "layers", "tmp"} {
		ents, err := os.ReadDir(filepath.Join(root, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			// The config blob is whole and verified when it is there.
			if sub == "blobs/sha256" && e.Name() == im.config.Hex {
				continue
			}
			t.Errorf("after a failed pull, %s/%s is left", sub, e.Name())
		}
	}
}

// settledGoroutines is the goroutine count once idle connections of
// earlier requests (the push) are closed.
func settledGoroutines() int {
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	n := runtime.NumGoroutine()
	for i := 0; i < 20; i++ {
		time.Sleep(10 * time.Millisecond)
		if m := runtime.NumGoroutine(); m < n {
			n = m
		}
	}
	return n
}

// assertGoroutinesBack waits (bounded) for the goroutine count to return
// to baseline, and names the goroutines that stay.
func assertGoroutinesBack(t *testing.T, baseline int) {
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
