package config

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		toml    string
		wantErr string // substring; empty = valid
		check   func(t *testing.T, c *Config)
	}{
		{"empty is defaults", "", "", func(t *testing.T, c *Config) {
			if c.Root != "/var/lib/husk" || c.CNI.ConfDir != "/etc/cni/net.d" || c.DefaultRuntime != "" {
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
		{"max concurrent downloads", "max_concurrent_downloads = 6\n", "", func(t *testing.T, c *Config) {
			if c.MaxConcurrentDownloads != 6 || Default().MaxConcurrentDownloads != 3 {
				t.Errorf("max_concurrent_downloads = %d, default %d", c.MaxConcurrentDownloads, Default().MaxConcurrentDownloads)
			}
		}},
		{"max concurrent downloads below 1", "max_concurrent_downloads = 0\n", "max_concurrent_downloads: must be at least 1", nil},
		{"writable layer refresh", "[stats]\nwritable_layer_refresh = \"2s\"\n", "", func(t *testing.T, c *Config) {
			got, def := time.Duration(c.Stats.WritableLayerRefresh), time.Duration(Default().Stats.WritableLayerRefresh)
			if got != 2*time.Second || def != 10*time.Second {
				t.Errorf("stats.writable_layer_refresh = %s, default %s", got, def)
			}
		}},
		{"writable layer refresh too short", "[stats]\nwritable_layer_refresh = \"10ms\"\n", "stats.writable_layer_refresh: must be at least 1s", nil},
		{"bad log level", "log_level = \"loud\"\n", "log_level", nil},
		{"bad driver", "cgroup_driver = \"x\"\n", "cgroup_driver", nil},
		{"missing default runtime", "default_runtime = \"kata\"\n", "default_runtime", nil},
		{"bad endpoint", "[registries.\"docker.io\"]\nendpoints = [\"ftp://x\"]\n", "endpoints[0]", nil},
		{"endpoint with credentials", "[registries.\"docker.io\"]\nendpoints = [\"https://bob:pw-s3cret@mirror.example\"]\n",
			`endpoints[0]: "https://<redacted>@mirror.example" must not carry credentials`, nil},
		{"endpoint with credentials, no scheme", "[registries.\"docker.io\"]\nendpoints = [\"bob:pw-s3cret@mirror.example\"]\n",
			`endpoints[0]: must start with http:// or https://, got "<redacted>@mirror.example"`, nil},
		{"skip upstream without endpoints", "[registries.\"docker.io\"]\nskip_upstream = true\n", "skip_upstream", nil},
		{"bad subnet", "[cni]\ndefault_subnet = \"nope\"\n", "cni.default_subnet", nil},
		{"cni timeout", "[cni]\ntimeout = \"20s\"\n", "", func(t *testing.T, c *Config) {
			if time.Duration(c.CNI.Timeout) != 20*time.Second || time.Duration(Default().CNI.Timeout) != time.Minute {
				t.Errorf("cni.timeout = %s, default %s", time.Duration(c.CNI.Timeout), time.Duration(Default().CNI.Timeout))
			}
		}},
		{"cni timeout not positive", "[cni]\ntimeout = \"0s\"\n", "cni.timeout: must be positive", nil},
		{"handler without path", "[runtimes.x]\nroot = \"/r\"\n", "runtimes.x.path", nil},
		{"infra start per handler", "[runtimes.kata]\npath = \"/usr/bin/kata-runtime\"\n[runtimes.crun]\ninfra = \"runtime\"\n[runtimes.mine]\npath = \"/opt/runc-wrapper\"\ninfra = \"direct\"\n", "", func(t *testing.T, c *Config) {
			for h, want := range map[string][2]bool{"runc": {true, false}, "crun": {false, true}, "kata": {false, false}, "mine": {true, true}} {
				if d, e := c.InfraDirect(h); d != want[0] || e != want[1] {
					t.Errorf("InfraDirect(%s) = %v, %v; want %v", h, d, e, want)
				}
			}
		}},
		{"no direct infra under systemd", "cgroup_driver = \"systemd\"\ncgroup_parent = \"husk.slice\"\n", "", func(t *testing.T, c *Config) {
			if d, _ := c.InfraDirect("runc"); d {
				t.Error("runc's infra starts directly under the systemd driver")
			}
		}},
		{"bad infra", "[runtimes.runc]\ninfra = \"vm\"\n", "runtimes.runc.infra", nil},
		{"direct infra needs cgroupfs", "cgroup_driver = \"systemd\"\ncgroup_parent = \"husk.slice\"\n[runtimes.runc]\ninfra = \"direct\"\n", "direct needs cgroup_driver cgroupfs", nil},
		{"ops keys off by default", "", "", func(t *testing.T, c *Config) {
			if c.LogFormat != "text" || c.Metrics.Address != "" || c.Debug.Address != "" || c.Debug.AllowNonLoopback {
				t.Errorf("log_format %q, metrics %+v, debug %+v", c.LogFormat, c.Metrics, c.Debug)
			}
		}},
		{"json logs", "log_format = \"json\"\n", "", func(t *testing.T, c *Config) {
			if c.LogFormat != "json" {
				t.Errorf("log_format = %q", c.LogFormat)
			}
		}},
		{"bad log format", "log_format = \"xml\"\n", "log_format: must be text or json", nil},
		{"metrics anywhere", "[metrics]\naddress = \":1338\"\n", "", func(t *testing.T, c *Config) {
			if c.Metrics.Address != ":1338" {
				t.Errorf("metrics.address = %q", c.Metrics.Address)
			}
		}},
		{"metrics not host:port", "[metrics]\naddress = \"127.0.0.1\"\n", "metrics.address", nil},
		{"metrics bad port", "[metrics]\naddress = \"127.0.0.1:99999\"\n", "metrics.address", nil},
		{"pprof on loopback", "[debug]\naddress = \"127.0.0.1:6060\"\n", "", nil},
		{"pprof on ::1", "[debug]\naddress = \"[::1]:6060\"\n", "", nil},
		{"pprof on localhost", "[debug]\naddress = \"localhost:0\"\n", "", nil},
		{"pprof on every interface", "[debug]\naddress = \":6060\"\n", "debug.allow_non_loopback", nil},
		{"pprof on a node address", "[debug]\naddress = \"10.0.0.5:6060\"\n", "debug.address: \"10.0.0.5:6060\" is not a loopback address", nil},
		{"pprof on a name", "[debug]\naddress = \"node1:6060\"\n", "not a loopback address", nil},
		{"pprof elsewhere when asked", "[debug]\naddress = \"0.0.0.0:6060\"\nallow_non_loopback = true\n", "", func(t *testing.T, c *Config) {
			if !c.Debug.AllowNonLoopback {
				t.Error("allow_non_loopback not set")
			}
		}},
		{"unknown debug key", "[debug]\nallow = true\n", "unknown key(s): debug.allow", nil},
		{"cdi default", "", "", func(t *testing.T, c *Config) {
			if strings.Join(c.CDI.SpecDirs, " ") != "/etc/cdi /var/run/cdi" {
				t.Errorf("cdi.spec_dirs = %q", c.CDI.SpecDirs)
			}
		}},
		{"cdi dirs", "[cdi]\nspec_dirs = [\"/opt/cdi\"]\n", "", func(t *testing.T, c *Config) {
			if len(c.CDI.SpecDirs) != 1 || c.CDI.SpecDirs[0] != "/opt/cdi" {
				t.Errorf("cdi.spec_dirs = %q", c.CDI.SpecDirs)
			}
		}},
		{"cdi relative dir", "[cdi]\nspec_dirs = [\"/etc/cdi\", \"cdi\"]\n", "cdi.spec_dirs[1]: must be an absolute path", nil},
		{"cdi dir twice", "[cdi]\nspec_dirs = [\"/etc/cdi\", \"/etc/cdi/\"]\n", "cdi.spec_dirs[1]: \"/etc/cdi/\" is listed twice", nil},
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
			if tt.check != nil {
				tt.check(t, c)
			}
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
	if c.ShmSize != 64<<20 || c.ImagePullProgressTimeout != Default().ImagePullProgressTimeout || len(c.CDI.SpecDirs) != 2 {
		t.Errorf("round trip changed values: %+v", c)
	}
	if !strings.Contains(string(b), "[cdi]") || !strings.Contains(string(b), "spec_dirs = ['/etc/cdi', '/var/run/cdi']") {
		t.Errorf("default config lacks [cdi] spec_dirs:\n%s", b)
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

// `huskd config default` lists every key of the schema with its default:
// walk the struct's toml tags and look each one up in the output.
func TestDefaultListsEveryKey(t *testing.T) {
	b, err := Default().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := toml.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	var walk func(typ reflect.Type, table map[string]any, prefix string)
	walk = func(typ reflect.Type, table map[string]any, prefix string) {
		for i := 0; i < typ.NumField(); i++ {
			key := strings.Split(typ.Field(i).Tag.Get("toml"), ",")[0]
			v, ok := table[key]
			if !ok {
				t.Errorf("config default lacks %s%s", prefix, key)
				continue
			}
			if ft := typ.Field(i).Type; ft.Kind() == reflect.Struct {
				sub, _ := v.(map[string]any)
				walk(ft, sub, prefix+key+".")
			}
		}
	}
	walk(reflect.TypeOf(Config{}), out, "")
	for _, want := range []string{"log_format = 'text'", "[metrics]\n  # host:port serving Prometheus metrics at /metrics; empty: off\n  address = ''", "[debug]", "allow_non_loopback = false"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("config default lacks %q:\n%s", want, b)
		}
	}
}

func TestRedacted(t *testing.T) {
	c, err := Parse([]byte("[registries.\"r.example\"]\nusername = \"bob\"\npassword = \"pw-secret\"\nauth = \"YXV0aA==\"\nidentity_token = \"tok-secret\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Redacted().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"pw-secret", "YXV0aA==", "tok-secret"} {
		if strings.Contains(string(b), secret) {
			t.Errorf("redacted config shows %q:\n%s", secret, b)
		}
	}
	if !strings.Contains(string(b), "bob") {
		t.Errorf("redacted config lost the user name:\n%s", b)
	}
	if c.Registries["r.example"].Password != "pw-secret" {
		t.Error("Redacted changed the original")
	}
}

// secretKeys classifies every key of the schema: true for a credential,
// which nothing huskd shows may carry. A key added to the schema fails
// TestEveryKeyClassified until it is listed here.
var secretKeys = map[string]bool{
	"root": false, "state": false, "listen": false, "log_level": false, "default_runtime": false,
	"pause_binary": false, "pause_image": false, "cgroup_driver": false, "cgroup_parent": false, "shm_size": false,
	"infra_oom_score_adj": false, "image_pull_progress_timeout": false, "log_format": false,
	"max_concurrent_downloads": false,
	"cni.conf_dir":             false, "cni.bin_dirs": false, "cni.timeout": false, "cni.cache_dir": false, "cni.write_default": false,
	"cni.default_name": false, "cni.default_bridge": false, "cni.default_subnet": false,
	"runtimes.*.path": false, "runtimes.*.root": false, "runtimes.*.infra": false,
	"registries.*.endpoints": false, "registries.*.skip_upstream": false, "registries.*.username": false,
	"registries.*.password": true, "registries.*.auth": true, "registries.*.identity_token": true,
	"registries.*.ca_file": false, "registries.*.insecure_skip_verify": false,
	// Paths: what they name is read by huskd and never shown.
	"stream.address": false, "stream.port": false, "stream.tls_cert": false, "stream.tls_key": false,
	"metrics.address": false, "debug.address": false, "debug.allow_non_loopback": false, "cdi.spec_dirs": false,
	"stats.writable_layer_refresh": false,
}

// schemaKeys lists the TOML keys of typ, tables and maps of tables walked
// ("*" for a map's key).
func schemaKeys(typ reflect.Type, prefix string) []string {
	var keys []string
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		key := prefix + strings.Split(f.Tag.Get("toml"), ",")[0]
		switch {
		case f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(Duration(0)):
			keys = append(keys, schemaKeys(f.Type, key+".")...)
		case f.Type.Kind() == reflect.Map && f.Type.Elem().Kind() == reflect.Struct:
			keys = append(keys, schemaKeys(f.Type.Elem(), key+".*.")...)
		default:
			keys = append(keys, key)
		}
	}
	return keys
}

func TestEveryKeyClassified(t *testing.T) {
	keys := schemaKeys(reflect.TypeOf(Config{}), "")
	for _, k := range keys {
		if _, ok := secretKeys[k]; !ok {
			t.Errorf("key %s: say in secretKeys whether it is a secret", k)
		}
	}
	if len(keys) != len(secretKeys) {
		t.Errorf("secretKeys lists %d keys, the schema has %d: drop the ones gone", len(secretKeys), len(keys))
	}
}

// Every form of the config that leaves huskd (verbose Status encodes it
// as JSON; a log line or a message may print it) uses the TOML key names
// and carries no secret value.
func TestConfigShownWithoutSecrets(t *testing.T) {
	var file strings.Builder
	file.WriteString("[registries.\"r.example\"]\nendpoints = [\"https://mirror.example\"]\nca_file = \"/etc/ca.pem\"\n")
	var secrets []string
	for key, secret := range secretKeys {
		field, ok := strings.CutPrefix(key, "registries.*.")
		if !secret || !ok {
			continue
		}
		value := "value-of-" + field + "-s3cr+t/="
		secrets = append(secrets, value)
		fmt.Fprintf(&file, "%s = %q\n", field, value)
	}
	file.WriteString("username = \"bob\"\n")
	c, err := Parse([]byte(file.String()))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(c) // what verbose Status shows
	if err != nil {
		t.Fatal(err)
	}
	var shown map[string]any
	if err := json.Unmarshal(b, &shown); err != nil {
		t.Fatal(err)
	}
	regs, _ := shown["registries"].(map[string]any)
	reg, _ := regs["r.example"].(map[string]any)
	if reg["username"] != "bob" || reg["ca_file"] != "/etc/ca.pem" || reg["password"] != "<redacted>" || shown["image_pull_progress_timeout"] != "5m0s" {
		t.Errorf("verbose Status JSON lacks the TOML keys or their values:\n%s", b)
	}
	for _, goName := range []string{"Registries", "ImagePullProgressTimeout", "IdentityToken", "ConfDir"} {
		if strings.Contains(string(b), `"`+goName+`"`) {
			t.Errorf("verbose Status JSON has the Go field name %s:\n%s", goName, b)
		}
	}
	var text, jsonLog strings.Builder
	slog.New(slog.NewTextHandler(&text, nil)).Info("config", "config", c)
	slog.New(slog.NewJSONHandler(&jsonLog, nil)).Info("config", "config", c)
	forms := map[string]string{"JSON": string(b), "fmt %v": fmt.Sprint(c), "fmt %+v": fmt.Sprintf("%+v", *c), "fmt %#v": fmt.Sprintf("%#v", c),
		"slog text": text.String(), "slog JSON": jsonLog.String()}
	for what, out := range forms {
		if !strings.Contains(out, "bob") {
			t.Errorf("%s of the config lacks the registry's username: %s", what, out)
		}
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s of the config shows the secret %q: %s", what, s, out)
			}
		}
	}
	if c.Registries["r.example"].Password == "<redacted>" {
		t.Error("showing the config changed it")
	}
}
