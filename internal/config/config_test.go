package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		toml    string
		wantErr string // substring; empty = valid
		check   func(t *testing.T, c *Config)
	}{
		{"empty is defaults", "", "", func(t *testing.T, c *Config) {
			if c.Root != "/var/lib/husk" || c.CNI.ConfDir != "/etc/cni/net.d" || c.DefaultRuntime != "runc" {
				t.Errorf("defaults not kept: %+v", c)
			}
		}},
		{"handler override keeps defaults", "[runtimes.crun]\nroot = \"/x\"\n[runtimes.kata]\npath = \"/usr/bin/kata\"\n", "", func(t *testing.T, c *Config) {
			if c.Runtimes["crun"].Path != "crun" || c.Runtimes["crun"].Root != "/x" || c.Runtimes["runc"].Path != "runc" || c.Runtimes["kata"].Path != "/usr/bin/kata" {
				t.Errorf("runtimes = %+v", c.Runtimes)
			}
		}},
		{"registries", "[registries.\"*\"]\nendpoints = [\"http://127.0.0.1:5000\"]\nskip_upstream = true\n", "", func(t *testing.T, c *Config) {
			if r := c.Registries["*"]; !r.SkipUpstream || r.Endpoints[0] != "http://127.0.0.1:5000" {
				t.Errorf("registries = %+v", c.Registries)
			}
		}},
		{"unknown key", "bogus = 1\n[cni]\nfoo = 2\n", "unknown key(s): bogus, cni.foo", nil},
		{"bad type names key", "shm_size = \"x\"\n", "shm_size", nil},
		{"bad duration", "image_pull_progress_timeout = \"soon\"\n", "image_pull_progress_timeout", nil},
		{"relative root", "root = \"var\"\n", "root: must be an absolute path", nil},
		{"bad log level", "log_level = \"loud\"\n", "log_level", nil},
		{"bad driver", "cgroup_driver = \"x\"\n", "cgroup_driver", nil},
		{"missing default runtime", "default_runtime = \"kata\"\n", "default_runtime", nil},
		{"bad endpoint", "[registries.\"docker.io\"]\nendpoints = [\"ftp://x\"]\n", "endpoints[0]", nil},
		{"skip upstream without endpoints", "[registries.\"docker.io\"]\nskip_upstream = true\n", "skip_upstream", nil},
		{"bad subnet", "[cni]\ndefault_subnet = \"nope\"\n", "cni.default_subnet", nil},
		{"handler without path", "[runtimes.x]\nroot = \"/r\"\n", "runtimes.x.path", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.toml))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse = %v, want error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tt.check(t, c)
		})
	}
}

func TestDefaultRoundTrip(t *testing.T) {
	b, err := Default().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(b)
	if err != nil {
		t.Fatalf("default config does not parse back: %v\n%s", err, b)
	}
	if c.ShmSize != 64<<20 || c.ImagePullProgressTimeout != Default().ImagePullProgressTimeout {
		t.Errorf("round trip changed values: %+v", c)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.toml"), false); err != nil {
		t.Errorf("implicit missing file: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.toml"), true); err == nil {
		t.Error("explicit missing file accepted")
	}
	p := filepath.Join(dir, "c.toml")
	if err := os.WriteFile(p, []byte("log_level = \"debug\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p, true)
	if err != nil || c.LogLevel != "debug" {
		t.Errorf("Load = %+v, %v", c, err)
	}
}
