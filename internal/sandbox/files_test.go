package sandbox

import (
	"os"
	"path/filepath"
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

func TestProcessStart(t *testing.T) {
	a, err := processStart(os.Getpid())
	if err != nil || a == 0 {
		t.Fatalf("processStart(self) = %d, %v", a, err)
	}
	if _, err := processStart(1 << 30); err == nil {
		t.Error("processStart of a PID that cannot exist succeeded")
	}
}

func TestName(t *testing.T) {
	got := Name(&runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "ns", Uid: "u1", Attempt: 3})
	if got != "web_ns_u1_3" {
		t.Errorf("Name = %q", got)
	}
}
