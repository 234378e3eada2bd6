package network

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

func TestWriteDefaultConfig(t *testing.T) {
	dir := t.TempDir()
	n := DefaultNetwork{Name: "husk", Bridge: "husk0", Subnet: "10.88.0.0/16"}
	p, written, err := WriteDefaultConfig(dir, n)
	if err != nil || !written {
		t.Fatalf("first write: %v written=%v", err, written)
	}
	list, err := libcni.ConfListFromFile(p)
	if err != nil {
		t.Fatalf("written config does not load: %v", err)
	}
	var types []string
	for _, pl := range list.Plugins {
		types = append(types, pl.Network.Type)
	}
	if strings.Join(types, ",") != "bridge,portmap" || list.Name != "husk" {
		t.Errorf("plugins %v name %q", types, list.Name)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("conf dir holds %v, want only %s", ents, filepath.Base(p))
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("config mode: %v, %v; want 0644", fi, err)
	}
	b, _ := os.ReadFile(p)
	for _, want := range []string{`"husk0"`, `"10.88.0.0/16"`, `"host-local"`, `"portMappings": true`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("config lacks %s:\n%s", want, b)
		}
	}
	// A dir that holds a network is left alone.
	if _, written, err := WriteDefaultConfig(dir, DefaultNetwork{Name: "other", Bridge: "x0", Subnet: "10.1.0.0/16"}); err != nil || written {
		t.Errorf("second write: %v written=%v", err, written)
	}
	if _, _, err := WriteDefaultConfig(t.TempDir(), DefaultNetwork{Name: "x", Bridge: "x0", Subnet: "nope"}); err == nil {
		t.Error("bad subnet accepted")
	}
}

func TestStatus(t *testing.T) {
	bin := t.TempDir()
	for _, p := range []string{"bridge", "portmap"} {
		if err := os.WriteFile(filepath.Join(bin, p), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	good := `{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "bridge"}, {"type": "portmap"}]}`
	tests := []struct {
		name    string
		files   map[string]string
		wantErr string
	}{
		{"empty dir", nil, "no CNI network config in"},
		{"broken file", map[string]string{"10-a.conflist": "{"}, "10-a.conflist"},
		{"missing plugin", map[string]string{"10-a.conflist": `{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "nosuch"}]}`}, `plugin "nosuch" not found`},
		{"good", map[string]string{"10-a.conflist": good}, ""},
		{"first broken, second good", map[string]string{"10-a.conflist": "{", "20-b.conflist": good}, ""},
		{"single conf", map[string]string{"10-a.conf": `{"cniVersion": "1.0.0", "name": "n", "type": "bridge"}`}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			m, err := New(Options{ConfDir: dir, BinDirs: []string{bin}, CacheDir: t.TempDir(), NetnsDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			err = m.Status()
			if tt.wantErr == "" {
				if err != nil || m.NetworkName() != "n" {
					t.Errorf("Status = %v, name %q", err, m.NetworkName())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Status = %v, want %q", err, tt.wantErr)
			}
			// Fixing the dir is noticed without a restart.
			if err := os.WriteFile(filepath.Join(dir, "99-fixed.conflist"), []byte(good), 0o644); err != nil {
				t.Fatal(err)
			}
			if tt.name != "missing plugin" {
				if err := m.Status(); err != nil {
					t.Errorf("after fixing: %v", err)
				}
			}
		})
	}
}

func TestWithoutIdlePlugins(t *testing.T) {
	list, err := libcni.ConfListFromBytes([]byte(`{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "bridge"}, {"type": "portmap", "capabilities": {"portMappings": true}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	noPorts := Attachment{SandboxID: "a"}.runtimeConf()
	if got := withoutIdlePlugins(list, noPorts); len(got.Plugins) != 1 || got.Plugins[0].Network.Type != "bridge" {
		t.Errorf("without ports: %d plugins", len(got.Plugins))
	}
	withPorts := Attachment{SandboxID: "a", PortMappings: []PortMapping{{Protocol: "tcp", ContainerPort: 80, HostPort: 8080}}}.runtimeConf()
	if got := withoutIdlePlugins(list, withPorts); len(got.Plugins) != 2 {
		t.Errorf("with ports: %d plugins", len(got.Plugins))
	}
	if len(list.Plugins) != 2 {
		t.Error("the loaded list was modified")
	}
}

func TestPodIPs(t *testing.T) {
	zero, one := 0, 1
	r := &types100.Result{
		Interfaces: []*types100.Interface{{Name: "husk0"}, {Name: "eth0", Sandbox: "/run/netns/x"}},
		IPs: []*types100.IPConfig{
			{Interface: &zero, Address: net.IPNet{IP: net.ParseIP("10.88.0.1"), Mask: net.CIDRMask(16, 32)}},
			{Interface: &one, Address: net.IPNet{IP: net.ParseIP("fd00::2"), Mask: net.CIDRMask(64, 128)}},
			{Interface: &one, Address: net.IPNet{IP: net.ParseIP("10.88.0.2"), Mask: net.CIDRMask(16, 32)}},
		},
	}
	got := podIPs(r)
	if strings.Join(got.IPs, ",") != "10.88.0.2,fd00::2" {
		t.Errorf("podIPs = %v, want IPv4 first and no host-side address", got.IPs)
	}
}

func TestChainCreateRace(t *testing.T) {
	for msg, want := range map[string]bool{
		`plugin type="portmap" failed (add): failed to create top-level DNAT chain: running [/usr/sbin/iptables -t nat -N CNI-HOSTPORT-DNAT --wait]: exit status 4: iptables v1.8.9 (nf_tables):  CHAIN_USER_ADD failed (File exists): chain CNI-HOSTPORT-DNAT`: true,
		`iptables: Chain already exists.`: true,
		`plugin type="bridge" failed (add): failed to allocate for range 0: no IP addresses available in range set`: false,
	} {
		if got := chainCreateRace(errors.New(msg)); got != want {
			t.Errorf("chainCreateRace(%q) = %v, want %v", msg, got, want)
		}
	}
}

// A pin file a crash left unmounted is no netns: CNI DEL is then run
// without one, as for a missing pin, since the bridge plugin refuses it.
func TestIsNetns(t *testing.T) {
	pin := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pin, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		path string
		want bool
	}{
		{"/proc/self/ns/net", true},
		{pin, false},
		{pin + ".missing", false},
	} {
		if got := isNetns(tt.path); got != tt.want {
			t.Errorf("isNetns(%s) = %v, want %v", tt.path, got, tt.want)
		}
	}
}
