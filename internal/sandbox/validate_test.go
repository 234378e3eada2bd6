package sandbox

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func validConfig() *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "default", Uid: "6f1c0a4e-1", Attempt: 1},
		Hostname:     "web",
		LogDirectory: "/var/log/pods/default_web_6f1c0a4e-1",
		DnsConfig:    &runtimeapi.DNSConfig{Servers: []string{"10.96.0.10"}, Searches: []string{"default.svc.cluster.local"}, Options: []string{"ndots:5"}},
		PortMappings: []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80, HostPort: 8080}},
		Labels:       map[string]string{"app": "web"},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: "/kubepods/besteffort/pod6f1c0a4e-1",
			Sysctls:      map[string]string{"net.ipv4.ip_unprivileged_port_start": "0"},
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{
				Pid: runtimeapi.NamespaceMode_POD,
			}},
		},
	}
}

func TestValidateConfig(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *runtimeapi.PodSandboxConfig)
		field  string // empty: valid
	}{
		{"valid", func(c *runtimeapi.PodSandboxConfig) {}, ""},
		{"namespaced sysctls", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Sysctls = map[string]string{"net.ipv4.ip_forward": "1", "kernel.shm_rmid_forced": "1", "kernel/msgmax": "8192", "fs.mqueue.msg_max": "10"}
		}, ""},
		{"node-wide sysctl", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Sysctls = map[string]string{"vm.overcommit_memory": "1"}
		}, "config.linux.sysctls[vm.overcommit_memory]"},
		{"net sysctl with host network", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
			c.Linux.Sysctls = map[string]string{"net.core.somaxconn": "1024"}
		}, "config.linux.sysctls[net.core.somaxconn]"},
		{"ipc sysctl with host ipc", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext.NamespaceOptions.Ipc = runtimeapi.NamespaceMode_NODE
			c.Linux.Sysctls = map[string]string{"kernel.shmmax": "1"}
		}, "config.linux.sysctls[kernel.shmmax]"},
		{"host network", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
			c.Linux.Sysctls = nil // the kubelet refuses net.* sysctls for host-network pods
		}, ""},
		{"no metadata", func(c *runtimeapi.PodSandboxConfig) { c.Metadata = nil }, "config.metadata"},
		{"empty name", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "" }, "config.metadata.name"},
		{"name with slash", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "a/b" }, "config.metadata.name"},
		{"name dotdot", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = ".." }, "config.metadata.name"},
		{"name NUL", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "a\x00b" }, "config.metadata.name"},
		{"name too long", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = strings.Repeat("a", 254) }, "config.metadata.name"},
		{"namespace traversal", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Namespace = "../../etc" }, "config.metadata.namespace"},
		{"namespace too long", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Namespace = strings.Repeat("n", 64) }, "config.metadata.namespace"},
		{"empty uid", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Uid = "" }, "config.metadata.uid"},
		{"hostname newline", func(c *runtimeapi.PodSandboxConfig) { c.Hostname = "a\nb" }, "config.hostname"},
		{"hostname too long", func(c *runtimeapi.PodSandboxConfig) { c.Hostname = strings.Repeat("h", 65) }, "config.hostname"},
		{"log dir relative", func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "var/log" }, "config.log_directory"},
		{"log dir unclean", func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "/var/log/pods/../../etc" }, "config.log_directory"},
		{"dns server not IP", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Servers = []string{"dns.example"} }, "config.dns_config.servers[0]"},
		{"dns search injects line", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Searches = []string{"a\nnameserver 1.2.3.4"} }, "config.dns_config.searches[0]"},
		{"dns option space", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Options = []string{"a b"} }, "config.dns_config.options[0]"},
		{"port protocol", func(c *runtimeapi.PodSandboxConfig) { c.PortMappings[0].Protocol = 7 }, "config.port_mappings[0].protocol"},
		{"container port 0", func(c *runtimeapi.PodSandboxConfig) { c.PortMappings[0].ContainerPort = 0 }, "config.port_mappings[0].container_port"},
		{"host port too big", func(c *runtimeapi.PodSandboxConfig) { c.PortMappings[0].HostPort = 70000 }, "config.port_mappings[0].host_port"},
		{"host ip", func(c *runtimeapi.PodSandboxConfig) { c.PortMappings[0].HostIp = "nope" }, "config.port_mappings[0].host_ip"},
		{"nil port", func(c *runtimeapi.PodSandboxConfig) { c.PortMappings = append(c.PortMappings, nil) }, "config.port_mappings[1]"},
		{"label empty key", func(c *runtimeapi.PodSandboxConfig) { c.Labels[""] = "x" }, "config.labels"},
		{"annotations too big", func(c *runtimeapi.PodSandboxConfig) {
			c.Annotations = map[string]string{"big": strings.Repeat("x", 300<<10)}
		}, "config.labels"},
		{"cgroup parent traversal", func(c *runtimeapi.PodSandboxConfig) { c.Linux.CgroupParent = "/../x" }, "config.linux.cgroup_parent"},
		{"sysctl name", func(c *runtimeapi.PodSandboxConfig) { c.Linux.Sysctls = map[string]string{"../x": "1"} }, "config.linux.sysctls"},
		{"unknown pid mode", func(c *runtimeapi.PodSandboxConfig) { c.Linux.SecurityContext.NamespaceOptions.Pid = 42 }, "config.linux.security_context.namespace_options.pid"},
		{"target pid at pod level", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_TARGET
		}, "config.linux.security_context.namespace_options.pid"},
		{"container network mode", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_CONTAINER
		}, "config.linux.security_context.namespace_options.network"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mutate(c)
			err := ValidateConfig(c)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("ValidateConfig = %v, want nil", err)
				}
				return
			}
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("ValidateConfig = %v, want InvalidArgument", err)
			}
			if !strings.HasPrefix(err.Error(), tt.field+":") {
				t.Errorf("error %q does not name field %q first", err, tt.field)
			}
		})
	}
	if err := ValidateConfig(nil); !errdefs.IsInvalidArgument(err) {
		t.Errorf("ValidateConfig(nil) = %v, want InvalidArgument", err)
	}
}

// FuzzValidateConfig drives validation with arbitrary encoded configs: it
// must never panic, and whatever it accepts must be safe to use as path
// elements and resolv.conf tokens.
func FuzzValidateConfig(f *testing.F) {
	seed, _ := proto.Marshal(validConfig())
	f.Add(seed)
	f.Add([]byte{})
	bad := validConfig()
	bad.Metadata.Name = "../x"
	b, _ := proto.Marshal(bad)
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := &runtimeapi.PodSandboxConfig{}
		if err := proto.Unmarshal(data, cfg); err != nil {
			return
		}
		if err := ValidateConfig(cfg); err != nil {
			if !errdefs.IsInvalidArgument(err) && !errdefs.IsNotImplemented(err) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		md := cfg.GetMetadata()
		for _, v := range []string{md.GetName(), md.GetNamespace(), md.GetUid()} {
			if v == "" || strings.ContainsAny(v, "/\x00") || strings.Contains(v, "..") {
				t.Fatalf("accepted unsafe metadata %q", v)
			}
		}
		if _, err := resolvConf(cfg.GetDnsConfig(), "/nonexistent"); err != nil {
			t.Fatalf("resolvConf of accepted config: %v", err)
		}
		out, _ := resolvConf(cfg.GetDnsConfig(), "/nonexistent")
		lines := strings.Count(string(out), "\n")
		dns := cfg.GetDnsConfig()
		max := len(dns.GetServers()) + 2
		if lines > max {
			t.Fatalf("resolv.conf has %d lines for %d servers: injected lines", lines, len(dns.GetServers()))
		}
	})
}
