package sandbox

import (
	"fmt"
	"net/netip"
	"path"
	"strings"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Limits on untrusted input. The name limits are Kubernetes' own (DNS
// subdomain, DNS label, UID); the rest bound what huskd stores and writes.
const (
	maxNameLen        = 253
	maxNamespaceLen   = 63
	maxUIDLen         = 128
	maxHostnameLen    = 64 // HOST_NAME_MAX
	maxPathLen        = 4096
	maxDNSServers     = 16
	maxDNSSearches    = 32
	maxDNSOptions     = 32
	maxDNSEntryLen    = 253
	maxPortMappings   = 1024
	maxMetadataBytes  = 256 << 10 // labels + annotations, as the API server allows
	maxSysctls        = 256
	maxSysctlValueLen = 4096
)

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %w", field, fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument)
}

// ValidateConfig checks a PodSandboxConfig before anything is created. Every
// value that reaches a path, a file or a runtime is checked here; errors name
// the field and wrap ErrInvalidArgument.
func ValidateConfig(cfg *runtimeapi.PodSandboxConfig) error {
	if cfg == nil {
		return invalid("config", "missing")
	}
	md := cfg.GetMetadata()
	if md == nil {
		return invalid("config.metadata", "missing")
	}
	if err := pathElement("config.metadata.name", md.GetName(), maxNameLen); err != nil {
		return err
	}
	if err := pathElement("config.metadata.namespace", md.GetNamespace(), maxNamespaceLen); err != nil {
		return err
	}
	if err := pathElement("config.metadata.uid", md.GetUid(), maxUIDLen); err != nil {
		return err
	}
	if h := cfg.GetHostname(); h != "" {
		if len(h) > maxHostnameLen {
			return invalid("config.hostname", "longer than %d bytes", maxHostnameLen)
		}
		if strings.ContainsFunc(h, func(r rune) bool { return r <= ' ' || r == '/' || r > '~' }) {
			return invalid("config.hostname", "%q has characters a hostname cannot have", h)
		}
	}
	if d := cfg.GetLogDirectory(); d != "" {
		if err := absPath("config.log_directory", d); err != nil {
			return err
		}
	}
	if err := validateDNS(cfg.GetDnsConfig()); err != nil {
		return err
	}
	if err := validatePorts(cfg.GetPortMappings()); err != nil {
		return err
	}
	if err := validateMetadataMaps(cfg.GetLabels(), cfg.GetAnnotations()); err != nil {
		return err
	}
	return validateLinux(cfg.GetLinux())
}

// pathElement checks a value that becomes a single path element or part of
// one: non-empty, bounded, and unable to name another directory.
func pathElement(field, v string, max int) error {
	switch {
	case v == "":
		return invalid(field, "empty")
	case len(v) > max:
		return invalid(field, "longer than %d bytes", max)
	case strings.ContainsRune(v, 0):
		return invalid(field, "contains a NUL byte")
	case strings.ContainsRune(v, '/'):
		return invalid(field, "%q contains '/'", v)
	case strings.Contains(v, ".."):
		return invalid(field, "%q contains '..'", v)
	case v == ".":
		return invalid(field, "%q is not a name", v)
	case strings.ContainsAny(v, "\n\r\t "):
		return invalid(field, "%q contains white space", v)
	}
	return nil
}

// absPath checks a host path: absolute, clean, bounded.
func absPath(field, p string) error {
	switch {
	case len(p) > maxPathLen:
		return invalid(field, "longer than %d bytes", maxPathLen)
	case strings.ContainsRune(p, 0):
		return invalid(field, "contains a NUL byte")
	case !path.IsAbs(p):
		return invalid(field, "%q is not an absolute path", p)
	case path.Clean(p) != p:
		return invalid(field, "%q is not a clean path (want %q)", p, path.Clean(p))
	}
	return nil
}

// resolvToken checks a value written into resolv.conf: one token per field,
// so a value cannot add lines or options of its own.
func resolvToken(field, v string) error {
	switch {
	case v == "":
		return invalid(field, "empty")
	case len(v) > maxDNSEntryLen:
		return invalid(field, "longer than %d bytes", maxDNSEntryLen)
	case strings.ContainsFunc(v, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return invalid(field, "%q contains white space or control characters", v)
	}
	return nil
}

func validateDNS(dns *runtimeapi.DNSConfig) error {
	if dns == nil {
		return nil
	}
	if n := len(dns.GetServers()); n > maxDNSServers {
		return invalid("config.dns_config.servers", "%d servers, at most %d", n, maxDNSServers)
	}
	for i, s := range dns.GetServers() {
		if _, err := netip.ParseAddr(s); err != nil {
			return invalid(fmt.Sprintf("config.dns_config.servers[%d]", i), "%q is not an IP address", s)
		}
	}
	if n := len(dns.GetSearches()); n > maxDNSSearches {
		return invalid("config.dns_config.searches", "%d domains, at most %d", n, maxDNSSearches)
	}
	for i, s := range dns.GetSearches() {
		if err := resolvToken(fmt.Sprintf("config.dns_config.searches[%d]", i), s); err != nil {
			return err
		}
	}
	if n := len(dns.GetOptions()); n > maxDNSOptions {
		return invalid("config.dns_config.options", "%d options, at most %d", n, maxDNSOptions)
	}
	for i, o := range dns.GetOptions() {
		if err := resolvToken(fmt.Sprintf("config.dns_config.options[%d]", i), o); err != nil {
			return err
		}
	}
	return nil
}

func validatePorts(ports []*runtimeapi.PortMapping) error {
	if len(ports) > maxPortMappings {
		return invalid("config.port_mappings", "%d mappings, at most %d", len(ports), maxPortMappings)
	}
	for i, p := range ports {
		field := fmt.Sprintf("config.port_mappings[%d]", i)
		if p == nil {
			return invalid(field, "missing")
		}
		if _, ok := runtimeapi.Protocol_name[int32(p.GetProtocol())]; !ok {
			return invalid(field+".protocol", "unknown protocol %d", p.GetProtocol())
		}
		if c := p.GetContainerPort(); c <= 0 || c > 65535 {
			return invalid(field+".container_port", "%d is not within 1..65535", c)
		}
		if h := p.GetHostPort(); h < 0 || h > 65535 {
			return invalid(field+".host_port", "%d is not within 0..65535", h)
		}
		if ip := p.GetHostIp(); ip != "" {
			if _, err := netip.ParseAddr(ip); err != nil {
				return invalid(field+".host_ip", "%q is not an IP address", ip)
			}
		}
	}
	return nil
}

func validateMetadataMaps(labels, annotations map[string]string) error {
	total := 0
	for _, m := range []struct {
		field string
		kv    map[string]string
	}{{"config.labels", labels}, {"config.annotations", annotations}} {
		for k, v := range m.kv {
			if k == "" {
				return invalid(m.field, "empty key")
			}
			if strings.ContainsRune(k, 0) {
				return invalid(m.field, "key %q contains a NUL byte", k)
			}
			total += len(k) + len(v)
		}
	}
	if total > maxMetadataBytes {
		return invalid("config.labels", "labels and annotations take %d bytes, at most %d", total, maxMetadataBytes)
	}
	return nil
}

func validateLinux(l *runtimeapi.LinuxPodSandboxConfig) error {
	if l == nil {
		return nil
	}
	if p := l.GetCgroupParent(); p != "" {
		if len(p) > maxPathLen || strings.ContainsRune(p, 0) || strings.Contains(p, "..") {
			return invalid("config.linux.cgroup_parent", "%q is not a usable cgroup parent", p)
		}
	}
	if n := len(l.GetSysctls()); n > maxSysctls {
		return invalid("config.linux.sysctls", "%d sysctls, at most %d", n, maxSysctls)
	}
	for k, v := range l.GetSysctls() {
		if k == "" || strings.Contains(k, "..") || strings.ContainsFunc(k, func(r rune) bool { return r <= ' ' || r > '~' }) {
			return invalid("config.linux.sysctls", "%q is not a sysctl name", k)
		}
		if len(v) > maxSysctlValueLen || strings.ContainsRune(v, 0) {
			return invalid("config.linux.sysctls["+k+"]", "value is not usable")
		}
		if why := sysctlNotNamespaced(k, l.GetSecurityContext().GetNamespaceOptions()); why != "" {
			return invalid("config.linux.sysctls["+k+"]", "%s", why)
		}
	}
	sc := l.GetSecurityContext()
	ns := sc.GetNamespaceOptions()
	if ns != nil {
		for _, f := range []struct {
			field string
			mode  runtimeapi.NamespaceMode
			ok    []runtimeapi.NamespaceMode
		}{
			{"network", ns.GetNetwork(), []runtimeapi.NamespaceMode{runtimeapi.NamespaceMode_POD, runtimeapi.NamespaceMode_NODE}},
			{"pid", ns.GetPid(), []runtimeapi.NamespaceMode{runtimeapi.NamespaceMode_POD, runtimeapi.NamespaceMode_CONTAINER, runtimeapi.NamespaceMode_NODE}},
			{"ipc", ns.GetIpc(), []runtimeapi.NamespaceMode{runtimeapi.NamespaceMode_POD, runtimeapi.NamespaceMode_NODE}},
		} {
			if !containsMode(f.ok, f.mode) {
				return invalid("config.linux.security_context.namespace_options."+f.field, "mode %s is not allowed for a pod", f.mode)
			}
		}
		if u := ns.GetUsernsOptions(); u != nil && u.GetMode() != runtimeapi.NamespaceMode_NODE {
			const field = "config.linux.security_context.namespace_options.userns_options"
			if u.GetMode() != runtimeapi.NamespaceMode_POD {
				return invalid(field+".mode", "mode %s is not supported: POD (a user namespace for the pod) or NODE", u.GetMode())
			}
			if ns.GetNetwork() == runtimeapi.NamespaceMode_NODE {
				return invalid(field, "a user namespace with the node's network is not supported")
			}
			for name, maps := range map[string][]*runtimeapi.IDMapping{"uids": u.GetUids(), "gids": u.GetGids()} {
				// One mapping starting at 0, as the kubelet sends: the
				// container's root must be mapped.
				if len(maps) != 1 {
					return invalid(field+"."+name, "%d mappings; exactly one is supported", len(maps))
				}
				if m := maps[0]; m.GetContainerId() != 0 || m.GetLength() == 0 || m.GetHostId() == 0 {
					return invalid(field+"."+name, "mapping %d:%d:%d must map container ID 0 to a non-root host ID", m.GetContainerId(), m.GetHostId(), m.GetLength())
				}
			}
		}
	}
	return nil
}

func containsMode(ok []runtimeapi.NamespaceMode, m runtimeapi.NamespaceMode) bool {
	for _, o := range ok {
		if o == m {
			return true
		}
	}
	return false
}

// sysctlNotNamespaced says why a sysctl cannot be set for a pod: only the
// sysctls of the namespaces the pod owns (IPC, network) are its to set; a
// node-wide one, or one of a namespace the pod shares with the node, would
// change the node.
func sysctlNotNamespaced(name string, ns *runtimeapi.NamespaceOption) string {
	n := strings.ReplaceAll(name, "/", ".")
	switch {
	case n == "kernel.sem" || strings.HasPrefix(n, "kernel.shm") || strings.HasPrefix(n, "kernel.msg") || strings.HasPrefix(n, "fs.mqueue."):
		if ns.GetIpc() == runtimeapi.NamespaceMode_NODE {
			return "is an IPC sysctl and the pod uses the node's IPC namespace"
		}
	case strings.HasPrefix(n, "net."):
		if ns.GetNetwork() == runtimeapi.NamespaceMode_NODE {
			return "is a network sysctl and the pod uses the node's network namespace"
		}
	default:
		return "is not a namespaced sysctl: it would change the whole node"
	}
	return ""
}
