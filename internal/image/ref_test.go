package image

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestParseReference(t *testing.T) {
	tests := []struct{ in, want string }{
		{"busybox", "docker.io/library/busybox:latest"},
		{"busybox:1.36", "docker.io/library/busybox:1.36"},
		{"docker.io/library/busybox", "docker.io/library/busybox:latest"},
		{"index.docker.io/library/busybox:1", "docker.io/library/busybox:1"},
		{"someone/app:v1", "docker.io/someone/app:v1"},
		{"registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9"},
		{"127.0.0.1:5000/x/y:z", "127.0.0.1:5000/x/y:z"},
		{"busybox@sha256:" + strings.Repeat("a", 64), "docker.io/library/busybox@sha256:" + strings.Repeat("a", 64)},
	}
	for _, tt := range tests {
		r, err := ParseReference(tt.in)
		if err != nil || r.String() != tt.want {
			t.Errorf("ParseReference(%q) = %q, %v; want %q", tt.in, r.String(), err, tt.want)
		}
	}
	for _, bad := range []string{"", "Upper/Case", "a b", "x@sha256:short", "bad\x00ref"} {
		if _, err := ParseReference(bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("ParseReference(%q) = %v, want InvalidArgument", bad, err)
		}
	}
}

func TestCleanEntry(t *testing.T) {
	tests := []struct {
		in, want string
		bad      bool
	}{
		{"a/b", "a/b", false},
		{"./a/b/", "a/b", false},
		{"a/../b", "b", false},
		{"a/..", ".", false},
		{"./", ".", false},
		{"/abs/path", "", true},
		{"../x", "", true},
		{"a/../../x", "", true},
		{"..", "", true},
		{"a\x00b", "", true},
	}
	for _, tt := range tests {
		got, err := cleanEntry(tt.in)
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("cleanEntry(%q) = %q, %v; want %q bad=%v", tt.in, got, err, tt.want, tt.bad)
		}
	}
}

// FuzzUnpack feeds arbitrary tar streams to unpack: it must never write
// outside its directory, whatever the entries say.
func FuzzUnpack(f *testing.F) {
	for _, entries := range [][]*tar.Header{
		{{Name: "a/", Typeflag: tar.TypeDir, Mode: 0o755}, {Name: "a/b", Typeflag: tar.TypeReg, Mode: 0o644}},
		{{Name: "../escape", Typeflag: tar.TypeReg}},
		{{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/"}, {Name: "l/x", Typeflag: tar.TypeReg}},
		{{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../x"}},
	} {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, h := range entries {
			_ = tw.WriteHeader(h)
		}
		tw.Close()
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		dir := filepath.Join(base, "layer")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		_ = unpack(context.Background(), bytes.NewReader(data), dir)
		ents, err := os.ReadDir(base)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 1 || ents[0].Name() != "layer" {
			t.Fatalf("unpack wrote outside its dir: %v", ents)
		}
	})
}
