package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

func TestProcessStart(t *testing.T) {
	a, err := processStart(os.Getpid())
	if err != nil || a == 0 {
		t.Fatalf("processStart(self) = %d, %v", a, err)
	}
	if _, err := processStart(1 << 30); err == nil {
		t.Error("processStart of a PID that cannot exist succeeded")
	}
	// A child that exited and is not reaped yet is gone, not alive.
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Wait() }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
		if i := bytes.LastIndexByte(b, ')'); i > 0 && bytes.HasPrefix(b[i+1:], []byte(" Z")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("child did not become a zombie")
		}
	}
	if _, err := processStart(cmd.Process.Pid); !errors.Is(err, errProcessGone) {
		t.Errorf("processStart(zombie) = %v, want errProcessGone", err)
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
