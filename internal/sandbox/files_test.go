package sandbox

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestResolvConf(t *testing.T) {
	host := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(host, []byte("nameserver 127.0.0.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		dns  *runtimeapi.DNSConfig
		want string
	}{
		{"none uses host", nil, "nameserver 127.0.0.53\n"},
		{"empty uses host", &runtimeapi.DNSConfig{}, "nameserver 127.0.0.53\n"},
		{"cluster", &runtimeapi.DNSConfig{
			Servers:  []string{"10.96.0.10", "fd00::a"},
			Searches: []string{"ns.svc.cluster.local", "svc.cluster.local"},
			Options:  []string{"ndots:5", "edns0"},
		}, "search ns.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\nnameserver fd00::a\noptions ndots:5 edns0\n"},
	}
	for _, tt := range tests {
		got, err := resolvConf(tt.dns, host)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if string(got) != tt.want {
			t.Errorf("%s: resolvConf = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestName(t *testing.T) {
	got := Name(&runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "ns", Uid: "u1", Attempt: 3})
	if got != "web_ns_u1_3" {
		t.Errorf("Name = %q", got)
	}
}

func TestPrepareInfraRootfs(t *testing.T) {
	state := t.TempDir()
	pause := filepath.Join(t.TempDir(), "husk-pause")
	dst := filepath.Join(state, "infra-rootfs", "husk-pause")
	tests := []struct {
		name        string
		binary      string
		leftover    bool // a temporary file a crash left in the rootfs
		wantReplace bool // a new inode, not the running infras' one
	}{
		{name: "first install", binary: "v1", wantReplace: true},
		{name: "same binary is kept", binary: "v1"},
		{name: "changed binary is replaced", binary: "v2", wantReplace: true},
		{name: "a crash's leftover is removed", binary: "v2", leftover: true},
	}
	var prev os.FileInfo
	for _, tt := range tests {
		if err := os.WriteFile(pause, []byte(tt.binary), 0o755); err != nil {
			t.Fatal(err)
		}
		if tt.leftover {
			if err := os.WriteFile(filepath.Join(state, "infra-rootfs", ".husk-pause.tmp-42"), []byte("v"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		rootfs, err := prepareInfraRootfs(state, pause)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		fi, err := os.Stat(dst)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if b, _ := os.ReadFile(dst); string(b) != tt.binary || fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: pause is %q mode %v, want %q 0755", tt.name, b, fi.Mode().Perm(), tt.binary)
		}
		if replaced := prev == nil || !os.SameFile(prev, fi); replaced != tt.wantReplace {
			t.Errorf("%s: replaced = %v, want %v", tt.name, replaced, tt.wantReplace)
		}
		prev = fi
		ents, _ := os.ReadDir(rootfs)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if want := "dev etc husk-pause proc sys"; strings.Join(names, " ") != want {
			t.Errorf("%s: rootfs holds %v, want %s", tt.name, names, want)
		}
	}
}

func TestSameFile(t *testing.T) {
	block := 32 << 10
	pattern := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i * 7)
		}
		return b
	}
	flip := func(b []byte, at int) []byte {
		c := append([]byte(nil), b...)
		c[at] ^= 1
		return c
	}
	for _, tc := range []struct {
		name     string
		src, dst []byte // dst nil: no file
		want     bool
	}{
		{"empty", []byte{}, []byte{}, true},
		{"equal, one block", pattern(block), pattern(block), true},
		{"equal, blocks and a tail", pattern(2*block + 5), pattern(2*block + 5), true},
		{"last byte differs", pattern(2*block + 5), flip(pattern(2*block+5), 2*block+4), false},
		{"first byte of a block differs", pattern(2 * block), flip(pattern(2*block), block), false},
		{"dst longer", pattern(block), pattern(block + 1), false},
		{"dst shorter", pattern(block + 1), pattern(block), false},
		{"no dst", pattern(10), nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			srcPath, dstPath := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
			if err := os.WriteFile(srcPath, tc.src, 0o644); err != nil {
				t.Fatal(err)
			}
			if tc.dst != nil {
				if err := os.WriteFile(dstPath, tc.dst, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			src, err := os.Open(srcPath)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			if got := sameFile(src, dstPath); got != tc.want {
				t.Errorf("sameFile = %v, want %v", got, tc.want)
			}
			// The caller copies src next: it must be read from the start.
			if off, _ := src.Seek(0, io.SeekCurrent); off != 0 {
				t.Errorf("src left at offset %d", off)
			}
		})
	}
}
