// Package config is huskd's TOML configuration: the schema, the embedded
// defaults and their validation. Every key is optional; a missing key keeps its
// default. Only cmd/huskd reads a Config; every other package takes its own
// Options built from it.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// DefaultPath is read when present and no --config is given.
const DefaultPath = "/etc/husk/config.toml"

// Config is the whole file. Field comments are the documentation users see
// through `huskd config default`.
type Config struct {
	// Root holds persistent state: the database, CNI result cache, images.
	Root string `toml:"root"`
	// State holds runtime state that a reboot must clear: the socket, the
	// pinned network namespaces, the sandboxes' resolv.conf, hostname and shm.
	State string `toml:"state"`
	// Listen is the CRI socket.
	Listen   string `toml:"listen"`
	LogLevel string `toml:"log_level"`
	// LogFormat is "text" (slog's key=value lines) or "json" (one object
	// per line, for a log pipeline).
	LogFormat string `toml:"log_format" comment:"text or json"`

	// DefaultRuntime is the handler used when a RuntimeClass names none;
	// empty: crun where it is installed and can run on the node, else runc
	// (huskd logs which and why; `huskd check` says it too).
	DefaultRuntime string `toml:"default_runtime" comment:"the handler of pods without a RuntimeClass; empty: crun where it is installed and can run on this node, else runc"`
	// PauseBinary is the infra process; empty means husk-pause next to huskd,
	// then on PATH.
	PauseBinary string `toml:"pause_binary"`
	// PauseImage, when set, is pinned in the image store (it does not replace
	// the built-in infra rootfs yet).
	PauseImage string `toml:"pause_image"`

	// CgroupDriver is "cgroupfs" or "systemd".
	CgroupDriver string `toml:"cgroup_driver"`
	// CgroupParent is used for sandboxes whose config names none.
	CgroupParent string `toml:"cgroup_parent"`
	// ShmSize is the byte size of each pod's /dev/shm tmpfs.
	ShmSize int64 `toml:"shm_size"`
	// InfraOOMScoreAdj is asked for the infra process; it is clamped to what
	// the node allows when huskd lacks CAP_SYS_RESOURCE.
	InfraOOMScoreAdj int `toml:"infra_oom_score_adj"`

	// ImagePullProgressTimeout fails a pull when one of its requests (token,
	// manifest, config, layer blob) goes this long without an answer or a
	// byte of its body.
	ImagePullProgressTimeout Duration `toml:"image_pull_progress_timeout" comment:"a pull fails when one of its requests (token, manifest, config, layer) gets no answer or byte for this long"`
	// MaxConcurrentDownloads bounds the layers one pull downloads, and
	// unpacks as they arrive, at once (containerd's key of the same name).
	// Its default, 3, is containerd's and Docker's: a stream is one core's
	// work, and one more than two keeps the cores busy while a stream waits
	// on the registry; each stream costs up to 16 MiB for zstd
	// (docs/benchmarks.md, "Big images").
	MaxConcurrentDownloads int `toml:"max_concurrent_downloads" comment:"layers one pull downloads and unpacks at once (default 3, containerd's: more streams than cores keeps them busy while one waits on the registry; a zstd stream holds ~16 MiB)"`

	CNI        CNI                 `toml:"cni"`
	Runtimes   map[string]Runtime  `toml:"runtimes"`
	Registries map[string]Registry `toml:"registries"`
	Stream     Stream              `toml:"stream"`
	Metrics    Metrics             `toml:"metrics"`
	Debug      Debug               `toml:"debug"`
	CDI        CDI                 `toml:"cdi"`
	Stats      Stats               `toml:"stats"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// Address serves Prometheus text at /metrics (host:port); empty is off.
	Address string `toml:"address" comment:"host:port serving Prometheus metrics at /metrics; empty: off"`
}

// Debug configures the profiling endpoint. It has no authentication: who
// reaches it can profile huskd and read its memory's contents through heap
// profiles, so it listens on loopback unless told otherwise.
type Debug struct {
	// Address serves net/http/pprof under /debug/pprof/ (host:port);
	// empty is off.
	Address string `toml:"address" comment:"host:port serving net/http/pprof under /debug/pprof/ (no authentication); empty: off"`
	// AllowNonLoopback accepts an Address that is not a loopback one.
	AllowNonLoopback bool `toml:"allow_non_loopback" comment:"accept a debug address other than loopback (127.0.0.0/8, ::1, localhost)"`
}

// CDI configures Container Device Interface devices (ContainerConfig's
// CDI_devices and the cdi.k8s.io/* annotations).
type CDI struct {
	// SpecDirs hold the CDI spec files, read again before each container that
	// asks for a device; a device in a later dir overrides one in an earlier.
	SpecDirs []string `toml:"spec_dirs" comment:"CDI spec dirs, read again before each container that asks for a device; a later one overrides an earlier"`
}

// Stats configures the usage figures of the stats calls.
type Stats struct {
	// WritableLayerRefresh is how often the containers' writable layers
	// are measured (walked) again for ContainerStats, ImageFsInfo and the
	// metrics: their usage lags by at most this, plus one round of walks.
	WritableLayerRefresh Duration `toml:"writable_layer_refresh" comment:"how often the writable layers are measured again (at least 1s): their usage lags by at most this"`
}

// CNI configures pod networking.
type CNI struct {
	// ConfDir holds .conflist/.conf files; the first in lexical order is used.
	ConfDir string `toml:"conf_dir"`
	// BinDirs are searched in order for plugin binaries.
	BinDirs []string `toml:"bin_dirs"`
	// Timeout bounds one CNI ADD or DEL (the whole plugin list); a plugin
	// still running then is killed with its process group and the call
	// fails (RunPodSandbox then undoes what the ADD did). Keep it, plus
	// the DEL of that undo, below the kubelet's 4-minute RunPodSandbox
	// timeout.
	Timeout Duration `toml:"timeout" comment:"bounds one CNI ADD or DEL; a plugin still running is killed with its process group"`
	// CacheDir keeps CNI results for DEL and garbage collection; empty means
	// <root>/cni.
	CacheDir string `toml:"cache_dir"`
	// WriteDefault writes a bridge network to ConfDir when it holds no
	// network config: DefaultName, on bridge DefaultBridge, DefaultSubnet.
	WriteDefault  bool   `toml:"write_default"`
	DefaultName   string `toml:"default_name"`
	DefaultBridge string `toml:"default_bridge"`
	DefaultSubnet string `toml:"default_subnet"`
}

// Runtime is one RuntimeClass handler: an OCI runtime binary and its state root.
type Runtime struct {
	// Path is the binary, absolute or looked up on PATH.
	Path string `toml:"path"`
	// Root is the runtime's --root; empty means <state>/runtime/<handler>.
	Root string `toml:"root"`
	// Infra is how the infra of this handler's pods starts: "direct", the
	// pod's monitor forks husk-pause into the pod's namespaces and it
	// confines itself (no runtime call: RunPodSandbox waits for CNI alone);
	// "runtime", the runtime runs it as a container, as a runtime that
	// makes the pod's sandbox itself (kata, gVisor) needs. Empty is
	// "direct" for runc and crun with the cgroupfs driver on amd64,
	// "runtime" for any other.
	Infra string `toml:"infra" comment:"how this handler's pod infra starts: direct (forked by the pod's monitor, no runtime call), runtime (a container of this runtime, as kata or gVisor need); empty: direct for runc and crun with the cgroupfs driver on amd64"`
}

// Infra start modes of a runtime handler.
const (
	InfraDirect  = "direct"
	InfraRuntime = "runtime"
)

// InfraDirect tells whether the infra of a handler's pods starts directly
// where husk-pause can (on amd64), and whether the config asks for it
// explicitly (then a node where it cannot is an error).
func (c *Config) InfraDirect(handler string) (direct, explicit bool) {
	r := c.Runtimes[handler]
	switch r.Infra {
	case InfraDirect:
		return true, true
	case InfraRuntime:
		return false, true
	}
	base := filepath.Base(r.Path)
	return (base == "runc" || base == "crun") && c.CgroupDriver == "cgroupfs", false
}

// Registry configures pulls from one registry host ("*" matches any host
// without its own entry).
type Registry struct {
	// Endpoints are tried in order; http:// ones are used as plain HTTP.
	Endpoints []string `toml:"endpoints"`
	// SkipUpstream never falls back to the registry host itself.
	SkipUpstream bool   `toml:"skip_upstream"`
	Username     string `toml:"username"`
	Password     string `toml:"password"`
	// Auth is base64("user:password"), as in a docker config.
	Auth          string `toml:"auth"`
	IdentityToken string `toml:"identity_token"`
	// CAFile is a PEM bundle trusted for this registry's TLS endpoints.
	CAFile             string `toml:"ca_file"`
	InsecureSkipVerify bool   `toml:"insecure_skip_verify"`
}

// Stream configures the exec/attach/port-forward server.
type Stream struct {
	Address string `toml:"address"`
	// Port 0 picks a free port.
	Port    int    `toml:"port"`
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// URLs stay valid for one minute and are single-use: the request cache
	// of k8s.io/cri-streaming fixes both, as in containerd and CRI-O.
}

// Duration is a time.Duration written as "5m" or "30s" in TOML.
type Duration time.Duration

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Default returns the embedded defaults: what huskd runs on with no file.
func Default() *Config {
	return &Config{
		Root:                     "/var/lib/husk",
		State:                    "/run/husk",
		Listen:                   "/run/husk/husk.sock",
		LogLevel:                 "info",
		LogFormat:                "text",
		CgroupDriver:             "cgroupfs",
		CgroupParent:             "/husk",
		ShmSize:                  64 << 20,
		InfraOOMScoreAdj:         -998,
		ImagePullProgressTimeout: Duration(5 * time.Minute),
		MaxConcurrentDownloads:   3,
		CNI: CNI{
			ConfDir:       "/etc/cni/net.d",
			BinDirs:       []string{"/opt/cni/bin", "/usr/lib/cni"},
			Timeout:       Duration(time.Minute),
			WriteDefault:  true,
			DefaultName:   "husk",
			DefaultBridge: "husk0",
			DefaultSubnet: "10.88.0.0/16",
		},
		Runtimes: map[string]Runtime{
			"runc": {Path: "runc"},
			"crun": {Path: "crun"},
		},
		Registries: map[string]Registry{},
		Stream: Stream{
			Address: "127.0.0.1",
		},
		CDI:   CDI{SpecDirs: []string{"/etc/cdi", "/var/run/cdi"}},
		Stats: Stats{WritableLayerRefresh: Duration(10 * time.Second)},
	}
}

// Load reads path over the defaults. A missing file at DefaultPath is not an
// error; a missing file named explicitly is.
func Load(path string, explicit bool) (*Config, error) {
	c := Default()
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && !explicit {
			return c, c.Validate()
		}
		return nil, fmt.Errorf("read config: %w", err)
	}
	if err := c.decode(b); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes TOML over the defaults and validates the result.
func Parse(b []byte) (*Config, error) {
	c := Default()
	if err := c.decode(b); err != nil {
		return nil, err
	}
	return c, c.Validate()
}

func (c *Config) decode(b []byte) error {
	// Tables in the file replace the default handler set only for the
	// handlers they name: keep the defaults and let the file add or override.
	dec := toml.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			keys := make([]string, 0, len(strict.Errors))
			for _, e := range strict.Errors {
				keys = append(keys, strings.Join(e.Key(), "."))
			}
			return fmt.Errorf("unknown key(s): %s", strings.Join(keys, ", "))
		}
		var derr *toml.DecodeError
		if errors.As(err, &derr) {
			row, col := derr.Position()
			return fmt.Errorf("line %d column %d: key %s: %w", row, col, strings.Join(derr.Key(), "."), err)
		}
		return err
	}
	return nil
}

// Validate checks every value, naming the key that is wrong.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	for key, p := range map[string]string{"root": c.Root, "state": c.State, "listen": c.Listen} {
		if !filepath.IsAbs(p) {
			bad(key, "must be an absolute path, got %q", p)
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", "must be debug, info, warn or error, got %q", c.LogLevel)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("log_format", "must be text or json, got %q", c.LogFormat)
	}
	switch c.CgroupDriver {
	case "cgroupfs":
		if c.CgroupParent != "" && !strings.HasPrefix(c.CgroupParent, "/") {
			bad("cgroup_parent", "must start with / for the cgroupfs driver, got %q", c.CgroupParent)
		}
	case "systemd":
		if c.CgroupParent != "" && !strings.HasSuffix(c.CgroupParent, ".slice") {
			bad("cgroup_parent", "must be a .slice for the systemd driver, got %q", c.CgroupParent)
		}
	default:
		bad("cgroup_driver", "must be cgroupfs or systemd, got %q", c.CgroupDriver)
	}
	if c.MaxConcurrentDownloads < 1 {
		bad("max_concurrent_downloads", "must be at least 1, got %d", c.MaxConcurrentDownloads)
	}
	if c.ShmSize <= 0 {
		bad("shm_size", "must be positive, got %d", c.ShmSize)
	}
	if c.InfraOOMScoreAdj < -1000 || c.InfraOOMScoreAdj > 1000 {
		bad("infra_oom_score_adj", "must be within -1000..1000, got %d", c.InfraOOMScoreAdj)
	}
	if c.Stats.WritableLayerRefresh < Duration(time.Second) {
		bad("stats.writable_layer_refresh", "must be at least 1s, got %s", time.Duration(c.Stats.WritableLayerRefresh))
	}
	if c.ImagePullProgressTimeout <= 0 {
		bad("image_pull_progress_timeout", "must be positive, got %s", time.Duration(c.ImagePullProgressTimeout))
	}
	if !filepath.IsAbs(c.CNI.ConfDir) {
		bad("cni.conf_dir", "must be an absolute path, got %q", c.CNI.ConfDir)
	}
	if c.CNI.Timeout <= 0 {
		bad("cni.timeout", "must be positive, got %s", time.Duration(c.CNI.Timeout))
	}
	if len(c.CNI.BinDirs) == 0 {
		bad("cni.bin_dirs", "must name at least one directory")
	}
	for i, d := range c.CNI.BinDirs {
		if !filepath.IsAbs(d) {
			bad(fmt.Sprintf("cni.bin_dirs[%d]", i), "must be an absolute path, got %q", d)
		}
	}
	if c.CNI.CacheDir != "" && !filepath.IsAbs(c.CNI.CacheDir) {
		bad("cni.cache_dir", "must be an absolute path, got %q", c.CNI.CacheDir)
	}
	if c.CNI.WriteDefault {
		if _, _, err := net.ParseCIDR(c.CNI.DefaultSubnet); err != nil {
			bad("cni.default_subnet", "%q is not a CIDR", c.CNI.DefaultSubnet)
		}
		if c.CNI.DefaultName == "" || strings.ContainsAny(c.CNI.DefaultName, "/\x00 ") || strings.Contains(c.CNI.DefaultName, "..") {
			bad("cni.default_name", "%q is not a usable network name", c.CNI.DefaultName)
		}
		if c.CNI.DefaultBridge == "" || len(c.CNI.DefaultBridge) > 15 {
			bad("cni.default_bridge", "must be an interface name of 1 to 15 bytes, got %q", c.CNI.DefaultBridge)
		}
	}
	if _, ok := c.Runtimes[c.DefaultRuntime]; !ok && c.DefaultRuntime != "" {
		bad("default_runtime", "%q has no [runtimes.%s] table", c.DefaultRuntime, c.DefaultRuntime)
	}
	for _, name := range sortedKeys(c.Runtimes) {
		r := c.Runtimes[name]
		if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
			bad("runtimes", "handler name %q is not usable as a path element", name)
		}
		if r.Path == "" {
			bad("runtimes."+name+".path", "must be set")
		}
		if r.Root != "" && !filepath.IsAbs(r.Root) {
			bad("runtimes."+name+".root", "must be an absolute path, got %q", r.Root)
		}
		switch {
		case r.Infra != "" && r.Infra != InfraDirect && r.Infra != InfraRuntime:
			bad("runtimes."+name+".infra", "must be %q or %q, got %q", InfraDirect, InfraRuntime, r.Infra)
		case r.Infra == InfraDirect && c.CgroupDriver == "systemd":
			// A direct infra's cgroup is made by huskd in cgroupfs;
			// under systemd it would be a unit systemd does not know.
			bad("runtimes."+name+".infra", "direct needs cgroup_driver cgroupfs")
		}
	}
	for _, host := range sortedKeys(c.Registries) {
		r := c.Registries[host]
		for i, e := range r.Endpoints {
			key := fmt.Sprintf("registries.%q.endpoints[%d]", host, i)
			switch {
			case !strings.HasPrefix(e, "http://") && !strings.HasPrefix(e, "https://"):
				bad(key, "must start with http:// or https://, got %q", shownEndpoint(e))
			case strings.Contains(e, "@"):
				bad(key, "%q must not carry credentials: set username and password", shownEndpoint(e))
			}
		}
		if r.SkipUpstream && len(r.Endpoints) == 0 {
			bad(fmt.Sprintf("registries.%q.skip_upstream", host), "needs at least one endpoint")
		}
	}
	if c.Stream.Port < 0 || c.Stream.Port > 65535 {
		bad("stream.port", "must be within 0..65535, got %d", c.Stream.Port)
	}
	if c.Stream.Address != "" && net.ParseIP(c.Stream.Address) == nil {
		bad("stream.address", "%q is not an IP address", c.Stream.Address)
	}
	if (c.Stream.TLSCert == "") != (c.Stream.TLSKey == "") {
		bad("stream.tls_cert", "tls_cert and tls_key go together")
	}
	if c.Metrics.Address != "" {
		if _, err := splitAddress(c.Metrics.Address); err != nil {
			bad("metrics.address", "%v", err)
		}
	}
	if c.Debug.Address != "" {
		host, err := splitAddress(c.Debug.Address)
		switch {
		case err != nil:
			bad("debug.address", "%v", err)
		case !c.Debug.AllowNonLoopback && !isLoopback(host):
			bad("debug.address", "%q is not a loopback address and pprof has no authentication; set debug.allow_non_loopback = true to serve it there anyway", c.Debug.Address)
		}
	}
	seen := map[string]bool{}
	for i, d := range c.CDI.SpecDirs {
		if !filepath.IsAbs(d) {
			bad(fmt.Sprintf("cdi.spec_dirs[%d]", i), "must be an absolute path, got %q", d)
		} else if seen[filepath.Clean(d)] {
			bad(fmt.Sprintf("cdi.spec_dirs[%d]", i), "%q is listed twice", d)
		}
		seen[filepath.Clean(d)] = true
	}
	return errors.Join(errs...)
}

// splitAddress checks a host:port to listen on and returns the host.
func splitAddress(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "", fmt.Errorf("%q: port must be a number within 0..65535", addr)
	}
	return host, nil
}

// isLoopback is true for localhost and loopback IPs; an empty host means
// every interface.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// shownEndpoint is an endpoint as a message shows it: without the
// credentials a URL's userinfo may carry.
func shownEndpoint(e string) string {
	if i := strings.LastIndex(e, "@"); i >= 0 {
		scheme, _, _ := strings.Cut(e, "://")
		if scheme == e {
			return redacted + e[i:]
		}
		return scheme + "://" + redacted + e[i:]
	}
	return e
}

// RuntimeRoot is the --root a handler's runtime keeps its state in.
func (c *Config) RuntimeRoot(handler string) string {
	if r := c.Runtimes[handler]; r.Root != "" {
		return r.Root
	}
	return filepath.Join(c.State, "runtime", handler)
}

// CNICacheDir is where CNI results are cached.
func (c *Config) CNICacheDir() string {
	if c.CNI.CacheDir != "" {
		return c.CNI.CacheDir
	}
	return filepath.Join(c.Root, "cni")
}

// redacted replaces a secret's value wherever the config is shown.
const redacted = "<redacted>"

// Redacted is a copy whose credentials (the registries' password, auth
// and identity_token) read "<redacted>". Every form of the config that
// leaves huskd goes through it: Info, MarshalJSON, LogValue, String.
func (c *Config) Redacted() *Config {
	r := *c
	r.Registries = make(map[string]Registry, len(c.Registries))
	for host, reg := range c.Registries {
		for _, secret := range []*string{&reg.Password, &reg.Auth, &reg.IdentityToken} {
			if *secret != "" {
				*secret = redacted
			}
		}
		r.Registries[host] = reg
	}
	return &r
}

// Info is the config as clients see it (verbose Status): its TOML keys and
// values, credentials redacted.
func (c Config) Info() (map[string]any, error) {
	b, err := c.Redacted().Marshal()
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := toml.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// MarshalJSON encodes Info: no JSON form of the config has a secret or a
// Go field name.
func (c Config) MarshalJSON() ([]byte, error) {
	m, err := c.Info()
	if err != nil {
		return nil, err
	}
	return json.Marshal(m)
}

// LogValue logs Info, whatever the handler.
func (c Config) LogValue() slog.Value {
	m, err := c.Info()
	if err != nil {
		return slog.StringValue("config: " + err.Error())
	}
	return slog.AnyValue(m)
}

// GoString is String: %#v shows no secret either.
func (c Config) GoString() string { return c.String() }

// String is the redacted config as TOML, for fmt.
func (c Config) String() string {
	b, err := c.Redacted().Marshal()
	if err != nil {
		return "config: " + err.Error()
	}
	return string(b)
}

// Marshal renders the config as TOML.
func (c *Config) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := toml.NewEncoder(&buf)
	enc.SetIndentTables(true)
	if err := enc.Encode(c); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
