// Package network gives pod sandboxes their network: network namespaces
// created and pinned by bind mount, and CNI ADD/DEL through libcni, with the
// results cached under huskd's own dir so DEL and garbage collection work
// after the conf dir changed, after a restart and after a reboot.
package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"

	"github.com/huskrt/husk/internal/atomicfile"
)

// IfName is the pod's interface.
const IfName = "eth0"

// Options configure a Manager.
type Options struct {
	// ConfDir holds .conflist/.conf/.json files; the first in lexical
	// order is the pod network.
	ConfDir string
	// BinDirs are searched in order for plugins.
	BinDirs []string
	// CacheDir is libcni's cache (results and configs of attachments).
	CacheDir string
	// NetnsDir holds the namespace pins (<NetnsDir>/<id>).
	NetnsDir string
	// Timeout bounds one ADD or DEL of the whole plugin list; a plugin
	// still running then is killed with its process group. Zero means
	// DefaultTimeout.
	Timeout time.Duration
	Logger  *slog.Logger
}

// DefaultTimeout bounds a CNI ADD or DEL: well below the kubelet's
// 4-minute RunPodSandbox timeout, with room for the DEL that undoes a
// failed ADD.
const DefaultTimeout = time.Minute

// Manager sets up and tears down pod networks.
type Manager struct {
	opts Options
	cni  *libcni.CNIConfig
	log  *slog.Logger

	// mu guards the loaded network and what it was loaded from.
	mu       sync.Mutex
	list     *libcni.NetworkConfigList
	loadErr  error
	loadedAt time.Time // conf dir mtime when loaded
	loadedOf []string  // file names when loaded
}

// New makes the dirs; the network config is loaded on first use.
func New(opts Options) (*Manager, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	for _, d := range []string{opts.CacheDir, opts.NetnsDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("network: %w", err)
		}
	}
	return &Manager{
		opts: opts,
		// Our exec, given up front: it kills a plugin's whole process
		// group at the timeout, and an explicit exec also keeps libcni from
		// setting a default on first use, a data race between concurrent
		// first ADDs (containerd/go-cni#81).
		cni: libcni.NewCNIConfigWithCacheDir(opts.BinDirs, opts.CacheDir, &pluginExec{stderr: os.Stderr}),
		log: opts.Logger,
	}, nil
}

// Status is nil when a usable network config is loaded, else why not.
func (m *Manager) Status() error {
	_, err := m.network()
	return err
}

// NetworkName is the loaded network's name, or "".
func (m *Manager) NetworkName() string {
	l, err := m.network()
	if err != nil {
		return ""
	}
	return l.Name
}

// network returns the pod network, reloading it when the conf dir changed
// (a stat and a readdir: cheap enough for every call).
func (m *Manager) network() (*libcni.NetworkConfigList, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	fi, err := os.Stat(m.opts.ConfDir)
	if err != nil {
		return nil, fmt.Errorf("no CNI network: conf dir %s: %w", m.opts.ConfDir, err)
	}
	files, err := libcni.ConfFiles(m.opts.ConfDir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return nil, fmt.Errorf("no CNI network: read %s: %w", m.opts.ConfDir, err)
	}
	sort.Strings(files)
	if (m.list != nil || m.loadErr != nil) && fi.ModTime().Equal(m.loadedAt) && equal(files, m.loadedOf) && !m.changedSince(files) {
		return m.list, m.loadErr
	}
	m.list, m.loadErr = m.load(files)
	m.loadedAt, m.loadedOf = fi.ModTime(), files
	return m.list, m.loadErr
}

// changedSince reports whether a config file was modified after it was loaded.
func (m *Manager) changedSince(files []string) bool {
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil && fi.ModTime().After(m.loadedAt) {
			return true
		}
	}
	return false
}

func (m *Manager) load(files []string) (*libcni.NetworkConfigList, error) {
	if len(files) == 0 {
		return nil, fmt.Errorf("no CNI network config in %s", m.opts.ConfDir)
	}
	var errs []error
	for _, f := range files {
		var list *libcni.NetworkConfigList
		var err error
		if strings.HasSuffix(f, ".conflist") {
			list, err = libcni.ConfListFromFile(f)
		} else {
			// Single-plugin .conf files are deprecated by CNI but still
			// on nodes; containerd and CRI-O read them too.
			var conf *libcni.NetworkConfig
			//lint:ignore SA1019 see above
			if conf, err = libcni.ConfFromFile(f); err == nil {
				//lint:ignore SA1019 see above
				list, err = libcni.ConfListFromConf(conf)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
			continue
		}
		if len(list.Plugins) == 0 {
			errs = append(errs, fmt.Errorf("%s: no plugins", f))
			continue
		}
		for _, p := range list.Plugins {
			if _, err := m.findPlugin(p.Network.Type); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", f, err))
				list = nil
				break
			}
		}
		if list != nil {
			return list, nil
		}
	}
	return nil, fmt.Errorf("no usable CNI network config in %s: %w", m.opts.ConfDir, errors.Join(errs...))
}

func (m *Manager) findPlugin(name string) (string, error) {
	for _, d := range m.opts.BinDirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("plugin %q not found in %s", name, strings.Join(m.opts.BinDirs, ", "))
}

// PortMapping is a host port forwarded into the pod.
type PortMapping struct {
	Protocol      string // tcp, udp, sctp
	ContainerPort int32
	HostPort      int32
	HostIP        string
}

// DNS is the pod's DNS config, for plugins with the dns capability.
type DNS struct{ Servers, Searches, Options []string }

// Attachment is what CNI needs to know of a sandbox.
type Attachment struct {
	SandboxID                     string
	NetnsPath                     string
	PodName, PodNamespace, PodUID string
	PortMappings                  []PortMapping
	DNS                           *DNS
}

// Result is what ADD gave the pod.
type Result struct {
	// IPs: the primary first, IPv4 before IPv6.
	IPs       []string
	Interface string
}

func (a Attachment) runtimeConf() *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{
		ContainerID: a.SandboxID,
		NetNS:       a.NetnsPath,
		IfName:      IfName,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", a.PodNamespace},
			{"K8S_POD_NAME", a.PodName},
			{"K8S_POD_INFRA_CONTAINER_ID", a.SandboxID},
			{"K8S_POD_UID", a.PodUID},
		},
		CapabilityArgs: map[string]interface{}{},
	}
	if len(a.PortMappings) > 0 {
		pm := make([]map[string]interface{}, 0, len(a.PortMappings))
		for _, p := range a.PortMappings {
			pm = append(pm, map[string]interface{}{
				"hostPort": p.HostPort, "containerPort": p.ContainerPort, "protocol": p.Protocol, "hostIP": p.HostIP,
			})
		}
		rt.CapabilityArgs["portMappings"] = pm
	}
	if a.DNS != nil {
		rt.CapabilityArgs["dns"] = map[string]interface{}{
			"servers": a.DNS.Servers, "searches": a.DNS.Searches, "options": a.DNS.Options,
		}
	}
	return rt
}

// Setup runs CNI ADD, bounded by the timeout. It does not undo a failed
// ADD: the caller always calls Teardown after any Setup attempt.
func (m *Manager) Setup(ctx context.Context, a Attachment) (Result, error) {
	list, err := m.network()
	if err != nil {
		return Result{}, fmt.Errorf("cni add for sandbox %s: %v: %w", a.SandboxID, err, errdefs.ErrUnavailable)
	}
	ctx, cancel := m.bounded(ctx)
	defer cancel()
	rt := a.runtimeConf()
	plugins := withoutIdlePlugins(list, rt)
	res, err := m.cni.AddNetworkList(ctx, plugins, rt)
	if err != nil && chainCreateRace(err) {
		// portmap (and the bridge's masquerade) check for their shared
		// top-level chains and then create them: two first ADDs at once,
		// in this huskd or another, can both see none and one fails.
		// Undo the partial ADD and try once more; the chain exists now.
		m.log.Debug("cni add lost an iptables chain creation race; retrying", "pod_sandbox_id", a.SandboxID)
		if derr := m.cni.DelNetworkList(ctx, plugins, rt); derr == nil {
			res, err = m.cni.AddNetworkList(ctx, plugins, rt)
		}
	}
	if err != nil {
		return Result{}, fmt.Errorf("cni add for sandbox %s (network %s): %w", a.SandboxID, list.Name, err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return Result{}, fmt.Errorf("cni add for sandbox %s: convert result: %w", a.SandboxID, err)
	}
	return podIPs(r), nil
}

// errTimeout is the cause of an ADD or DEL cancelled by the timeout.
var errTimeout = errors.New("did not finish within [cni] timeout")

// bounded is ctx cut at the timeout, with errTimeout as its cause: the
// plugin then running is killed with its process group, and the error
// says which knob ended it.
func (m *Manager) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, m.opts.Timeout, fmt.Errorf("%w (%s): %w", errTimeout, m.opts.Timeout, context.DeadlineExceeded))
}

// capabilityOnly are plugins whose whole work comes from one runtime
// capability: without it their ADD returns the previous result and their
// DEL has nothing of this attachment to remove. Skipping them then saves a
// plugin exec (and for portmap's DEL, several iptables execs) per call.
var capabilityOnly = map[string]string{"portmap": "portMappings"}

// withoutIdlePlugins drops capability-only plugins the attachment gives no
// work. ADD and DEL decide alike, from the same capability args (DEL uses
// the cached ones), so a plugin skipped at ADD is skipped at DEL.
func withoutIdlePlugins(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) *libcni.NetworkConfigList {
	keep := make([]*libcni.NetworkConfig, 0, len(list.Plugins))
	for _, p := range list.Plugins {
		if capName, ok := capabilityOnly[p.Network.Type]; ok && rt.CapabilityArgs[capName] == nil {
			continue
		}
		keep = append(keep, p)
	}
	if len(keep) == len(list.Plugins) || len(keep) == 0 {
		return list
	}
	trimmed := *list
	trimmed.Plugins = keep
	return &trimmed
}

// chainCreateRace recognises iptables refusing to create a chain that
// appeared between a plugin's existence check and its create.
func chainCreateRace(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "CHAIN_USER_ADD failed (File exists)") || strings.Contains(msg, "Chain already exists")
}

// podIPs picks the pod's addresses: those on the pod's interface (or on no
// interface), IPv4 first.
func podIPs(r *types100.Result) Result {
	out := Result{Interface: IfName}
	var v4, v6 []string
	for _, ip := range r.IPs {
		if ip.Interface != nil && *ip.Interface < len(r.Interfaces) && r.Interfaces[*ip.Interface].Sandbox == "" {
			continue // a host-side address, not the pod's
		}
		if ip.Address.IP.To4() != nil {
			v4 = append(v4, ip.Address.IP.String())
		} else {
			v6 = append(v6, ip.Address.IP.String())
		}
	}
	out.IPs = append(v4, v6...)
	return out
}

// Teardown runs CNI DEL, with the config cached at ADD when there is one.
// DEL of what was never added, or was already deleted, succeeds, and so
// does DEL after the namespace is gone.
func (m *Manager) Teardown(ctx context.Context, a Attachment) error {
	rt := a.runtimeConf()
	if a.NetnsPath != "" && !isNetns(a.NetnsPath) {
		// Plugins clean host-side state (IPAM, iptables) without a
		// netns; given a dead path, or a pin a crash left unmounted
		// (the bridge plugin: "unknown FS magic"), some fail instead.
		rt.NetNS = ""
	}
	list, cached, err := m.cachedList(a.SandboxID)
	if err != nil {
		return err
	}
	if list == nil {
		if list, err = m.network(); err != nil {
			// Nothing cached and no network: ADD never ran here.
			return nil
		}
	}
	if cached != nil {
		rt.CapabilityArgs = cached.CapabilityArgs
	}
	ctx, cancel := m.bounded(ctx)
	defer cancel()
	if err := m.cni.DelNetworkList(ctx, withoutIdlePlugins(list, rt), rt); err != nil {
		return fmt.Errorf("cni del for sandbox %s (network %s): %w", a.SandboxID, list.Name, err)
	}
	return nil
}

// cachedList returns the network config and runtime config libcni cached
// for the sandbox's attachment at ADD, or nil when none is cached.
func (m *Manager) cachedList(id string) (*libcni.NetworkConfigList, *libcni.NetworkAttachment, error) {
	atts, err := m.cni.GetCachedAttachments(id)
	if err != nil {
		return nil, nil, fmt.Errorf("cni cache for sandbox %s: %w", id, err)
	}
	for _, att := range atts {
		if att.IfName != IfName {
			continue
		}
		list, err := libcni.ConfListFromBytes(att.Config)
		if err != nil {
			// Older caches hold a single plugin config.
			//lint:ignore SA1019 caches written from a .conf file
			conf, cerr := libcni.ConfFromBytes(att.Config)
			if cerr != nil {
				return nil, nil, fmt.Errorf("cni cache for sandbox %s: %w", id, err)
			}
			//lint:ignore SA1019 as above
			if list, err = libcni.ConfListFromConf(conf); err != nil {
				return nil, nil, fmt.Errorf("cni cache for sandbox %s: %w", id, err)
			}
		}
		return list, att, nil
	}
	return nil, nil, nil
}

// Released is what GC released.
type Released struct {
	Attachments []string // sandbox IDs whose CNI attachment was deleted
	Netns       []string // pins unmounted and removed
}

// GC releases what belongs to no known sandbox: cached CNI attachments get a
// DEL with their cached config, and netns pins are unmounted and removed.
func (m *Manager) GC(ctx context.Context, known func(sandboxID string) bool) (Released, error) {
	var rel Released
	var errs []error
	atts, err := m.cni.GetCachedAttachments("")
	if err != nil {
		errs = append(errs, fmt.Errorf("read cni cache: %w", err))
	}
	for _, att := range atts {
		if known(att.ContainerID) {
			continue
		}
		a := Attachment{SandboxID: att.ContainerID, NetnsPath: att.NetNS}
		if err := m.Teardown(ctx, a); err != nil {
			errs = append(errs, err)
			continue
		}
		rel.Attachments = append(rel.Attachments, att.ContainerID)
	}
	ents, err := os.ReadDir(m.opts.NetnsDir)
	if err != nil {
		errs = append(errs, fmt.Errorf("read netns dir: %w", err))
	}
	for _, e := range ents {
		if known(e.Name()) {
			continue
		}
		p := filepath.Join(m.opts.NetnsDir, e.Name())
		if err := m.RemoveNetns(p); err != nil {
			errs = append(errs, err)
			continue
		}
		rel.Netns = append(rel.Netns, p)
	}
	return rel, errors.Join(errs...)
}

// DefaultNetwork describes the bridge network huskd writes when the conf
// dir holds none.
type DefaultNetwork struct{ Name, Bridge, Subnet string }

// WriteDefaultConfig writes <confDir>/10-<name>.conflist when confDir holds
// no network config: bridge (gateway, masquerade), host-local IPAM and
// portmap. Loopback is not in it: huskd brings lo up itself.
func WriteDefaultConfig(confDir string, n DefaultNetwork) (string, bool, error) {
	if _, _, err := net.ParseCIDR(n.Subnet); err != nil {
		return "", false, fmt.Errorf("default network subnet %q: %w", n.Subnet, err)
	}
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		return "", false, fmt.Errorf("default network: %w", err)
	}
	files, err := libcni.ConfFiles(confDir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return "", false, fmt.Errorf("default network: %w", err)
	}
	if len(files) > 0 {
		return "", false, nil
	}
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       n.Name,
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": n.Bridge, "isGateway": true, "ipMasq": true, "hairpinMode": true,
				"ipam": map[string]any{
					"type":   "host-local",
					"ranges": [][]map[string]string{{{"subnet": n.Subnet}}},
					"routes": []map[string]string{{"dst": "0.0.0.0/0"}},
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return "", false, err
	}
	path := filepath.Join(confDir, "10-"+n.Name+".conflist")
	if err := atomicfile.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return "", false, fmt.Errorf("default network: %w", err)
	}
	return path, true, nil
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// isNetns tells whether path is a network namespace (a pinned nsfs file),
// not a missing path or a pin file nothing is mounted on.
func isNetns(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}
