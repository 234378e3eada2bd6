package image

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/huskrt/husk/internal/testutil"
)

// testRegistry is an in-process registry on 127.0.0.1 counting requests.
type testRegistry struct {
	*httptest.Server
	host  string
	mu    sync.Mutex
	gets  map[string]int // path -> GET count
	stall atomic.Value   // string: a blob digest whose responses hang
}

func newRegistry(t testing.TB, wrap func(http.Handler) http.Handler) *testRegistry {
	t.Helper()
	r := &testRegistry{gets: map[string]int{}}
	var h http.Handler = registry.New(registry.Logger(nopLogger()))
	if wrap != nil {
		h = wrap(h)
	}
	inner := h
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet {
			r.mu.Lock()
			r.gets[req.URL.Path]++
			r.mu.Unlock()
			if d, _ := r.stall.Load().(string); d != "" && strings.HasSuffix(req.URL.Path, "/blobs/"+d) {
				w.WriteHeader(http.StatusOK)
				_, _ = w.Write([]byte{0x1f})
				w.(http.Flusher).Flush()
				<-req.Context().Done()
				return
			}
		}
		inner.ServeHTTP(w, req)
	}))
	t.Cleanup(r.Close)
	r.host = strings.TrimPrefix(r.URL, "http://")
	return r
}

func (r *testRegistry) blobGets(digest string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for p, c := range r.gets {
		if strings.HasSuffix(p, "/blobs/"+digest) {
			n += c
		}
	}
	return n
}

func (r *testRegistry) push(t testing.TB, repoTag string, img v1.Image) {
	t.Helper()
	ref, err := name.NewTag(r.host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
}

func newService(t *testing.T, root string, db *bolt.DB, regs map[string]Registry) *Service {
	t.Helper()
	s, err := New(Options{Root: root, DB: db, Registries: regs, PullProgressTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func openDB(t testing.TB, dir string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, "db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func mirror(hosts ...string) map[string]Registry {
	var eps []string
	for _, h := range hosts {
		eps = append(eps, "http://"+h)
	}
	return map[string]Registry{"*": {Endpoints: eps, SkipUpstream: true}}
}

// layerOf builds a layer from tar entries.
func layerOf(t *testing.T, entries ...*tar.Header) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		if h.Typeflag == tar.TypeReg && h.Size == 0 {
			h.Size = int64(len(h.Name))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(h.Name)[:h.Size]); err != nil {
				t.Fatal(err)
			}
		}
	}
	tw.Close()
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func imageOf(t *testing.T, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.Config(img, v1.Config{User: "1000", Cmd: []string{"sh"}})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func needRoot(t *testing.T) {
	t.Helper()
	testutil.RequiresRoot(t, "unpacked layers keep their owners, and overlay whiteouts are 0:0 device nodes")
}

func TestPullResolveRemove(t *testing.T) {
	needRoot(t)
	reg := newRegistry(t, nil)
	img, err := random.Image(2048, 3)
	if err != nil {
		t.Fatal(err)
	}
	reg.push(t, "library/busybox:latest", img)
	reg.push(t, "library/busybox:v2", img)
	dir := t.TempDir()
	s := newService(t, filepath.Join(dir, "images"), openDB(t, dir), mirror(reg.host))
	ctx := context.Background()

	id, err := s.Pull(ctx, "busybox", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfgName, _ := img.ConfigName()
	if id != cfgName.String() {
		t.Errorf("ImageRef %s, want config digest %s", id, cfgName)
	}
	if _, err := s.Pull(ctx, "docker.io/library/busybox:v2", nil); err != nil {
		t.Fatal(err)
	}
	got, err := s.Resolve("busybox")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got.RepoTags, ",") != "docker.io/library/busybox:latest,docker.io/library/busybox:v2" ||
		len(got.RepoDigests) != 1 || !strings.HasPrefix(got.RepoDigests[0], "docker.io/library/busybox@sha256:") {
		t.Errorf("record tags %v digests %v", got.RepoTags, got.RepoDigests)
	}
	for _, ref := range []string{id, strings.TrimPrefix(id, "sha256:"), id[:19], "docker.io/library/busybox:v2", got.RepoDigests[0]} {
		if r, err := s.Resolve(ref); err != nil || r.ID != id {
			t.Errorf("Resolve(%q) = %v, %v", ref, r, err)
		}
	}
	for _, d := range s.LayerDirs(got) {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("layer dir: %v", err)
		}
	}
	// Removing one tag keeps the image and its other names.
	if err := s.Remove("busybox:latest"); err != nil {
		t.Fatal(err)
	}
	if r, err := s.Resolve(id); err != nil || strings.Join(r.RepoTags, ",") != "docker.io/library/busybox:v2" {
		t.Fatalf("after removing a tag: %v, %v", r, err)
	}
	// Removing the last tag removes the image, though a digest still
	// names it.
	if err := s.Remove("docker.io/library/busybox:v2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resolve(id); !errdefs.IsNotFound(err) {
		t.Errorf("after removing the last tag: %v", err)
	}
	if _, err := s.Pull(ctx, "busybox", nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(id); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resolve(id); !errdefs.IsNotFound(err) {
		t.Errorf("after removing by ID: %v", err)
	}
	for _, sub := range []string{"layers", "blobs/sha256"} {
		if ents, _ := os.ReadDir(filepath.Join(dir, "images", sub)); len(ents) != 0 {
			t.Errorf("%s not freed: %d entries", sub, len(ents))
		}
	}
	if err := s.Remove("never-pulled"); err != nil {
		t.Errorf("remove unknown: %v", err)
	}
}

// Layers a container holds stay when their image is removed, until the
// container releases them; holding a layer that is gone is NotFound.
func TestHeldLayersOutliveTheirImage(t *testing.T) {
	needRoot(t)
	reg := newRegistry(t, nil)
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	reg.push(t, "library/held:1", img)
	dir := t.TempDir()
	s := newService(t, filepath.Join(dir, "images"), openDB(t, dir), mirror(reg.host))
	id, err := s.Pull(context.Background(), "held:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := s.Resolve(id)
	if err != nil {
		t.Fatal(err)
	}
	// Two owners, one of them holding in two steps (an image volume adds
	// its layers to its container's).
	if err := s.HoldLayers("c1", rec.Layers[:1]); err != nil {
		t.Fatal(err)
	}
	if err := s.HoldLayers("c1", rec.Layers); err != nil {
		t.Fatal(err)
	}
	if err := s.HoldLayers("c2", rec.Layers[1:]); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(id); err != nil {
		t.Fatal(err)
	}
	layers := func() int {
		ents, _ := os.ReadDir(filepath.Join(dir, "images", "layers"))
		return len(ents)
	}
	for _, step := range []struct {
		release string
		want    int
	}{{"", 2}, {"c1", 1}, {"c1", 1}, {"c2", 0}} {
		if step.release != "" {
			s.ReleaseLayers(step.release)
		}
		if err := s.GC(); err != nil {
			t.Fatal(err)
		}
		if got := layers(); got != step.want {
			t.Errorf("after releasing %q: %d layers left, want %d", step.release, got, step.want)
		}
	}
	if err := s.HoldLayers("c3", rec.Layers); !errdefs.IsNotFound(err) {
		t.Errorf("hold of collected layers: %v, want NotFound", err)
	}
	s.ReleaseLayers("c3")
}

func TestWhiteoutsBecomeOverlayWhiteouts(t *testing.T) {
	needRoot(t)
	reg := newRegistry(t, nil)
	base := layerOf(t,
		&tar.Header{Name: "a/", Typeflag: tar.TypeDir, Mode: 0o755},
		&tar.Header{Name: "a/f1", Typeflag: tar.TypeReg},
		&tar.Header{Name: "b/", Typeflag: tar.TypeDir, Mode: 0o755},
		&tar.Header{Name: "b/g", Typeflag: tar.TypeReg},
		&tar.Header{Name: "suid", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 12, Gid: 34},
		&tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"},
		&tar.Header{Name: "hard", Typeflag: tar.TypeLink, Linkname: "a/f1"},
	)
	top := layerOf(t,
		&tar.Header{Name: "a/.wh.f1", Typeflag: tar.TypeReg},
		&tar.Header{Name: "b/", Typeflag: tar.TypeDir, Mode: 0o755},
		&tar.Header{Name: "b/.wh..wh..opq", Typeflag: tar.TypeReg},
		&tar.Header{Name: "b/new", Typeflag: tar.TypeReg},
	)
	reg.push(t, "library/wh:1", imageOf(t, base, top))
	dir := t.TempDir()
	s := newService(t, filepath.Join(dir, "images"), openDB(t, dir), mirror(reg.host))
	if _, err := s.Pull(context.Background(), "wh:1", nil); err != nil {
		t.Fatal(err)
	}
	img, _ := s.Resolve("wh:1")
	dirs := s.LayerDirs(img)
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dirs[1], "a/f1"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("a/f1 whiteout: %v mode %o rdev %d", err, st.Mode, st.Rdev)
	}
	buf := make([]byte, 8)
	if n, err := unix.Lgetxattr(filepath.Join(dirs[1], "b"), "trusted.overlay.opaque", buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("b opaque xattr: %q, %v", buf[:n], err)
	}
	if err := unix.Lstat(filepath.Join(dirs[0], "suid"), &st); err != nil || st.Mode&0o7777 != 0o4755 || st.Uid != 12 || st.Gid != 34 {
		t.Errorf("suid file: mode %o uid %d gid %d, %v", st.Mode&0o7777, st.Uid, st.Gid, err)
	}
	if l, err := os.Readlink(filepath.Join(dirs[0], "link")); err != nil || l != "/etc/passwd" {
		t.Errorf("symlink %q, %v", l, err)
	}
	var a, h unix.Stat_t
	_ = unix.Lstat(filepath.Join(dirs[0], "a/f1"), &a)
	if err := unix.Lstat(filepath.Join(dirs[0], "hard"), &h); err != nil || h.Ino != a.Ino {
		t.Errorf("hard link not linked: %v", err)
	}
}

func TestZstdLayer(t *testing.T) {
	needRoot(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: "z", Typeflag: tar.TypeReg, Mode: 0o644, Size: 5})
	_, _ = tw.Write([]byte("zstd!"))
	tw.Close()
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		tarball.WithCompression(compression.ZStd), tarball.WithMediaType(types.OCILayerZStd))
	if err != nil {
		t.Fatal(err)
	}
	reg := newRegistry(t, nil)
	reg.push(t, "library/zstd:1", imageOf(t, l))
	dir := t.TempDir()
	s := newService(t, filepath.Join(dir, "images"), openDB(t, dir), mirror(reg.host))
	if _, err := s.Pull(context.Background(), "zstd:1", nil); err != nil {
		t.Fatal(err)
	}
	img, _ := s.Resolve("zstd:1")
	if got, err := os.ReadFile(filepath.Join(s.LayerDirs(img)[0], "z")); err != nil || string(got) != "zstd!" {
		t.Errorf("zstd layer file = %q, %v", got, err)
	}
}

func TestMaliciousLayersRejected(t *testing.T) {
	needRoot(t)
	outside := t.TempDir()
	cases := map[string][]*tar.Header{
		"dotdot":          {{Name: "../../../../../../" + strings.TrimPrefix(outside, "/") + "/evil", Typeflag: tar.TypeReg}},
		"through symlink": {{Name: "esc", Typeflag: tar.TypeSymlink, Linkname: outside}, {Name: "esc/evil", Typeflag: tar.TypeReg}},
		"hard link out":   {{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../../../etc/passwd"}},
		"absolute":        {{Name: outside + "/evil", Typeflag: tar.TypeReg}},
	}
	for name, entries := range cases {
		t.Run(name, func(t *testing.T) {
			reg := newRegistry(t, nil)
			reg.push(t, "library/bad:1", imageOf(t, layerOf(t, entries...)))
			dir := t.TempDir()
			s := newService(t, filepath.Join(dir, "images"), openDB(t, dir), mirror(reg.host))
			_, err := s.Pull(context.Background(), "bad:1", nil)
			if err == nil || !strings.Contains(err.Error(), "escapes the layer root") {
				t.Errorf("pull = %v, want a rejected layer", err)
			}
			if _, err := os.Stat(filepath.Join(outside, "evil")); err == nil {
				t.Error("a file was written outside the layer")
			}
			if ents, _ := os.ReadDir(filepath.Join(dir, "images", "layers")); len(ents) != 0 {
				t.Errorf("half layer kept: %d", len(ents))
			}
			if imgs, _ := s.List(); len(imgs) != 0 {
				t.Error("record kept for a failed pull")
			}
		})
	}
}

func TestSharedLayersAndConcurrentPulls(t *testing.T) {
	needRoot(t)
	reg := newRegistry(t, nil)
	shared := layerOf(t, &tar.Header{Name: "shared", Typeflag: tar.TypeReg})
	a := imageOf(t, shared, layerOf(t, &tar.Header{Name: "a", Typeflag: tar.TypeReg}))
	b := imageOf(t, shared, layerOf(t, &tar.Header{Name: "b", Typeflag: tar.TypeReg}))
	reg.push(t, "library/a:1", a)
	reg.push(t, "library/b:1", b)
	dir := t.TempDir()
	s := newService(t, filepath.Join(dir, "images"), openDB(t, dir), mirror(reg.host))
	reg.mu.Lock()
	reg.gets = map[string]int{}
	reg.mu.Unlock()
	var wg sync.WaitGroup
	errs := make(chan error, 12)
	for i := 0; i < 12; i++ {
		ref := "a:1"
		if i%2 == 1 {
			ref = "b:1"
		}
		wg.Add(1)
		go func() { defer wg.Done(); _, err := s.Pull(context.Background(), ref, nil); errs <- err }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	d, _ := shared.Digest()
	if n := reg.blobGets(d.String()); n != 1 {
		t.Errorf("shared layer fetched %d times, want 1", n)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "images", "layers")); len(ents) != 3 {
		t.Errorf("%d layer dirs, want 3", len(ents))
	}
	// Freed only when nothing uses it.
	if err := s.Remove("a:1"); err != nil {
		t.Fatal(err)
	}
	sharedDiff, _ := shared.DiffID()
	if _, err := os.Stat(s.layerDir(sharedDiff.String())); err != nil {
		t.Error("shared layer freed while b uses it")
	}
}

func TestMultiArchIndexPicksThisPlatform(t *testing.T) {
	needRoot(t)
	reg := newRegistry(t, nil)
	var idx v1.ImageIndex = empty.Index
	var want v1.Hash
	for _, arch := range []string{"arm64", runtime.GOARCH, "s390x"} {
		img := imageOf(t, layerOf(t, &tar.Header{Name: arch, Typeflag: tar.TypeReg}))
		if arch == runtime.GOARCH {
			want, _ = img.ConfigName()
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			MediaType: types.DockerManifestSchema2, Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	ref, _ := name.NewTag(reg.host+"/library/multi:1", name.Insecure)
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := newService(t, filepath.Join(dir, "images"), openDB(t, dir), mirror(reg.host))
	id, err := s.Pull(context.Background(), "multi:1", nil)
	if err != nil || id != want.String() {
		t.Errorf("pulled %s, %v; want %s", id, err, want)
	}
	idxDigest, _ := idx.Digest()
	if img, _ := s.Resolve(id); img == nil || img.RepoDigests[0] != "docker.io/library/multi@"+idxDigest.String() {
		t.Errorf("repo digest should name the index: %v", img)
	}
}

func TestAuthFallbackAndStall(t *testing.T) {
	needRoot(t)
	authed := newRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != "alice" || p != "s3cret" {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	img, _ := random.Image(512, 1)
	// Pushing needs the credentials too.
	ref, _ := name.NewTag(authed.host+"/library/private:1", name.Insecure)
	if err := remote.Write(ref, img, remote.WithAuth(authn.FromConfig(authn.AuthConfig{Username: "alice", Password: "s3cret"}))); err != nil {
		t.Fatal(err)
	}
	empty404 := newRegistry(t, nil)
	dir := t.TempDir()
	s := newService(t, filepath.Join(dir, "images"), openDB(t, dir), mirror(empty404.host, authed.host))
	_, err := s.Pull(context.Background(), "private:1", nil)
	if err == nil || !strings.Contains(err.Error(), "http://"+empty404.host) || !strings.Contains(err.Error(), "http://"+authed.host) {
		t.Errorf("pull without credentials = %v; want an error naming both endpoints", err)
	}
	if _, err := s.Pull(context.Background(), "private:1", &Auth{Username: "alice", Password: "s3cret"}); err != nil {
		t.Errorf("pull with credentials through the second endpoint: %v", err)
	}

	stalled := newRegistry(t, nil)
	img2, _ := random.Image(4096, 1)
	stalled.push(t, "library/slow:1", img2)
	layers, _ := img2.Layers()
	ld, _ := layers[0].Digest()
	stalled.stall.Store(ld.String())
	s2, err := New(Options{Root: filepath.Join(dir, "images2"), DB: openDB(t, t.TempDir()), Registries: mirror(stalled.host),
		PullProgressTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = s2.Pull(context.Background(), "slow:1", nil)
	if err == nil || !strings.Contains(err.Error(), "no progress for") {
		t.Errorf("stalled pull = %v", err)
	}
	if time.Since(start) > 20*time.Second {
		t.Errorf("stalled pull took %s", time.Since(start))
	}
	stalled.stall.Store("")
	if _, err := s2.Pull(context.Background(), "slow:1", nil); err != nil {
		t.Errorf("pull after the stall ended: %v", err)
	}
}

func TestRestartRemovesOrphans(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	db := openDB(t, dir)
	root := filepath.Join(dir, "images")
	newService(t, root, db, nil)
	for _, p := range []string{"layers/deadbeef/x", "blobs/sha256/deadbeef", "tmp/layer-123/y"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := newService(t, root, db, nil).GC(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"layers/deadbeef", "blobs/sha256/deadbeef", "tmp/layer-123"} {
		if _, err := os.Stat(filepath.Join(root, p)); err == nil {
			t.Errorf("%s survived the restart", p)
		}
	}
}

func nopLogger() *log.Logger { return log.New(io.Discard, "", 0) }

// TestTLSCAAndTokenAuth pulls over TLS trusting a configured CA file, and
// through a registry that wants bearer tokens: an identity token from the
// request is exchanged at the token server (OAuth2 refresh grant), a
// registry token is sent as it is.
func TestTLSCAAndTokenAuth(t *testing.T) {
	needRoot(t)
	const identityToken, accessToken = "id-7f3a", "access-91c2"
	var protect atomic.Bool
	var srv *httptest.Server
	reg := registry.New(registry.Logger(nopLogger()))
	srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			_ = r.ParseForm()
			if r.Form.Get("grant_type") != "refresh_token" || r.Form.Get("refresh_token") != identityToken {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"access_token":"` + accessToken + `","expires_in":300}`))
			return
		}
		if protect.Load() && r.Header.Get("Authorization") != "Bearer "+accessToken {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+srv.URL+`/token",service="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "https://")
	ref, _ := name.NewTag(host + "/library/tls:1")
	img := imageOf(t, layerOf(t, &tar.Header{Name: "over-tls", Typeflag: tar.TypeReg}))
	if err := remote.Write(ref, img, remote.WithTransport(srv.Client().Transport)); err != nil {
		t.Fatal(err)
	}
	want, _ := img.ConfigName()
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	regs := func(ca string) map[string]Registry {
		return map[string]Registry{"*": {Endpoints: []string{"https://" + host}, SkipUpstream: true, CAFile: ca}}
	}
	pull := func(name string, regs map[string]Registry, auth *Auth) (string, error) {
		d := filepath.Join(dir, name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		return newService(t, filepath.Join(d, "images"), openDB(t, d), regs).Pull(context.Background(), "tls:1", auth)
	}

	if _, err := pull("no-ca", regs(""), nil); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("pull without the CA = %v, want a certificate error", err)
	}
	if id, err := pull("ca", regs(caFile), nil); err != nil || id != want.String() {
		t.Errorf("pull trusting the CA file = %s, %v; want %s", id, err, want)
	}
	protect.Store(true)
	if _, err := pull("anonymous", regs(caFile), nil); !errdefs.IsUnauthorized(err) {
		t.Errorf("anonymous pull from a token registry = %v, want Unauthenticated", err)
	}
	if id, err := pull("identity", regs(caFile), &Auth{IdentityToken: identityToken}); err != nil || id != want.String() {
		t.Errorf("pull with an identity token = %s, %v", id, err)
	}
	if _, err := pull("bad-identity", regs(caFile), &Auth{IdentityToken: "wrong"}); err == nil {
		t.Error("pull with a wrong identity token succeeded")
	}
	if id, err := pull("registry-token", regs(caFile), &Auth{RegistryToken: accessToken}); err != nil || id != want.String() {
		t.Errorf("pull with a registry token = %s, %v", id, err)
	}
}

// pullCounts is a PullObserver.
type pullCounts struct {
	bytes atomic.Int64
	done  atomic.Int64
}

func (p *pullCounts) PulledBytes(n int64)    { p.bytes.Add(n) }
func (p *pullCounts) PullDone(time.Duration) { p.done.Add(1) }

// The observer hears every byte of config and layers downloaded, once,
// and each pull that succeeded; a pull of what is present downloads
// nothing, a failed pull is not done.
func TestPullObserver(t *testing.T) {
	needRoot(t)
	reg := newRegistry(t, nil)
	img, err := random.Image(4096, 2)
	if err != nil {
		t.Fatal(err)
	}
	reg.push(t, "library/observed:1", img)
	dir := t.TempDir()
	obs := &pullCounts{}
	s, err := New(Options{Root: filepath.Join(dir, "images"), DB: openDB(t, dir), Registries: mirror(reg.host),
		PullProgressTimeout: 2 * time.Second, Pulls: obs})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := img.Manifest()
	want := m.Config.Size
	for _, l := range m.Layers {
		want += l.Size
	}
	for i, tt := range []struct {
		ref       string
		wantBytes int64
		wantDone  int64
	}{
		{"observed:1", want, 1},
		{"observed:1", want, 2}, // everything present: nothing downloaded
		{"nosuch:1", want, 2},
	} {
		_, err := s.Pull(context.Background(), tt.ref, nil)
		if (err == nil) != (tt.ref != "nosuch:1") {
			t.Fatalf("pull %d %s: %v", i, tt.ref, err)
		}
		if obs.bytes.Load() != tt.wantBytes || obs.done.Load() != tt.wantDone {
			t.Errorf("after pull %d of %s: %d bytes, %d done; want %d, %d", i, tt.ref, obs.bytes.Load(), obs.done.Load(), tt.wantBytes, tt.wantDone)
		}
	}
}
