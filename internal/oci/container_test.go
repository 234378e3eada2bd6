package oci

import (
	"maps"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestContainerProcessArgs(t *testing.T) {
	img := &v1.Config{Entrypoint: []string{"/entry"}, Cmd: []string{"default-arg"}}
	tests := []struct {
		name       string
		cmd, args  []string
		img        *v1.Config
		want       string
		wantErrSub string
	}{
		{name: "image only", img: img, want: "/entry default-arg"},
		{name: "args replace cmd", args: []string{"a"}, img: img, want: "/entry a"},
		{name: "command drops cmd", cmd: []string{"/bin/x"}, img: img, want: "/bin/x"},
		{name: "command and args", cmd: []string{"/bin/x"}, args: []string{"y"}, img: img, want: "/bin/x y"},
		{name: "nothing", img: &v1.Config{}, wantErrSub: "no command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ContainerProcessArgs(&runtimeapi.ContainerConfig{Command: tt.cmd, Args: tt.args}, tt.img)
			if tt.wantErrSub != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErrSub) {
					t.Fatalf("err = %v, want %q", err, tt.wantErrSub)
				}
				return
			}
			if err != nil || strings.Join(got, " ") != tt.want {
				t.Errorf("args = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestContainerEnv(t *testing.T) {
	cfg := &runtimeapi.ContainerConfig{Envs: []*runtimeapi.KeyValue{{Key: "A", Value: []byte("cfg")}, {Key: "C", Value: []byte("3")}}}
	got := ContainerEnv(cfg, &v1.Config{Env: []string{"PATH=/bin", "A=img", "B=2"}}, "/home/app")
	want := []string{"PATH=/bin", "A=cfg", "B=2", "C=3", "HOME=/home/app"}
	if !slices.Equal(got, want) {
		t.Errorf("env = %q, want %q", got, want)
	}
}

func TestCapabilities(t *testing.T) {
	tests := []struct {
		name      string
		sc        *runtimeapi.LinuxContainerSecurityContext
		has, lack []string
	}{
		{name: "default", sc: &runtimeapi.LinuxContainerSecurityContext{}, has: []string{"CAP_CHOWN", "CAP_KILL"}, lack: []string{"CAP_SYS_ADMIN"}},
		{name: "add and drop", sc: &runtimeapi.LinuxContainerSecurityContext{Capabilities: &runtimeapi.Capability{
			AddCapabilities: []string{"NET_ADMIN"}, DropCapabilities: []string{"chown"}}},
			has: []string{"CAP_NET_ADMIN", "CAP_KILL"}, lack: []string{"CAP_CHOWN"}},
		{name: "drop all, add one", sc: &runtimeapi.LinuxContainerSecurityContext{Capabilities: &runtimeapi.Capability{
			AddCapabilities: []string{"CAP_NET_BIND_SERVICE"}, DropCapabilities: []string{"ALL"}}},
			has: []string{"CAP_NET_BIND_SERVICE"}, lack: []string{"CAP_CHOWN", "CAP_KILL"}},
		{name: "privileged", sc: &runtimeapi.LinuxContainerSecurityContext{Privileged: true}, has: []string{"CAP_SYS_ADMIN", "CAP_NET_ADMIN"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			caps := capabilities(tt.sc, CapabilitiesFromMask(1<<41-1))
			for _, c := range tt.has {
				if !slices.Contains(caps.Bounding, c) || !slices.Contains(caps.Effective, c) {
					t.Errorf("lacks %s: %v", c, caps.Bounding)
				}
			}
			for _, c := range tt.lack {
				if slices.Contains(caps.Bounding, c) {
					t.Errorf("has %s", c)
				}
			}
		})
	}
}

func TestAppSpecNamespacesAndMounts(t *testing.T) {
	sandbox := func(pid, net runtimeapi.NamespaceMode) *runtimeapi.PodSandboxConfig {
		return &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "p"}, Linux: &runtimeapi.LinuxPodSandboxConfig{
			Sysctls:         map[string]string{"net.ipv4.ip_forward": "1"},
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Pid: pid, Network: net}}}}
	}
	nsPath := func(s *specs.Spec, kind specs.LinuxNamespaceType) (string, bool) {
		for _, n := range s.Linux.Namespaces {
			if n.Type == kind {
				return n.Path, true
			}
		}
		return "", false
	}
	cfg := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "c"}, Command: []string{"x"},
		Mounts: []*runtimeapi.Mount{
			{ContainerPath: "/data", HostPath: "/srv/data", Readonly: true, Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
			{ContainerPath: "/etc/hosts", HostPath: "/kubelet/hosts"},
		},
		Linux: &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 1 << 20, CpuShares: 512}},
	}
	base := ContainerSpec{ID: "c1", InfraPID: 42, NetnsPath: "/run/netns/x", Hosts: "/sb/hosts", ShmPath: "/sb/shm"}

	base.Sandbox = sandbox(runtimeapi.NamespaceMode_POD, runtimeapi.NamespaceMode_POD)
	s, err := AppSpec(cfg, base)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := nsPath(s, specs.PIDNamespace); p != "/proc/42/ns/pid" {
		t.Errorf("pid=POD joins %q", p)
	}
	if p, _ := nsPath(s, specs.NetworkNamespace); p != "/run/netns/x" {
		t.Errorf("network namespace %q", p)
	}
	var data, hosts *specs.Mount
	for i := range s.Mounts {
		switch s.Mounts[i].Destination {
		case "/data":
			data = &s.Mounts[i]
		case "/etc/hosts":
			if hosts != nil {
				t.Error("two mounts on /etc/hosts")
			}
			hosts = &s.Mounts[i]
		}
	}
	if data == nil || !slices.Contains(data.Options, "ro") || !slices.Contains(data.Options, "rslave") {
		t.Errorf("/data mount = %+v", data)
	}
	if hosts == nil || hosts.Source != "/kubelet/hosts" {
		t.Errorf("the CRI's /etc/hosts should replace the sandbox's: %+v", hosts)
	}
	if *s.Linux.Resources.Memory.Limit != 1<<20 || *s.Linux.Resources.CPU.Shares != 512 || s.Linux.Sysctl["net.ipv4.ip_forward"] != "1" {
		t.Errorf("resources or sysctls not applied: %+v %v", s.Linux.Resources, s.Linux.Sysctl)
	}

	base.Sandbox = sandbox(runtimeapi.NamespaceMode_CONTAINER, runtimeapi.NamespaceMode_NODE)
	s, _ = AppSpec(cfg, base)
	if p, ok := nsPath(s, specs.PIDNamespace); !ok || p != "" {
		t.Errorf("pid=CONTAINER: %q, %v; want a new namespace", p, ok)
	}
	if _, ok := nsPath(s, specs.NetworkNamespace); ok {
		t.Error("host network pod's container has a network namespace")
	}
}

func TestAmbientCapabilities(t *testing.T) {
	caps := capabilities(&runtimeapi.LinuxContainerSecurityContext{Capabilities: &runtimeapi.Capability{
		AddCapabilities: []string{"NET_BIND_SERVICE"}, AddAmbientCapabilities: []string{"net_bind_service"}}}, nil)
	if !slices.Contains(caps.Ambient, "CAP_NET_BIND_SERVICE") || !slices.Contains(caps.Inheritable, "CAP_NET_BIND_SERVICE") {
		t.Errorf("ambient %v inheritable %v, want CAP_NET_BIND_SERVICE in both", caps.Ambient, caps.Inheritable)
	}
}

func TestDeviceAccess(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"", "rwm", true}, {"r", "r", true}, {"rw", "rw", true}, {"mwr", "mwr", true}, {"rwm", "rwm", true},
		{"x", "", false}, {"rr", "", false}, {"rwmr", "", false}, {"R", "", false}, {" r", "", false},
	}
	for _, tt := range tests {
		if got, ok := DeviceAccess(tt.in); got != tt.want || ok != tt.ok {
			t.Errorf("DeviceAccess(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// Each CRI device's cgroup rule grants its permissions; devices the CRI
// did not list (a privileged container's) get rwm.
func TestDeviceCgroupRules(t *testing.T) {
	cfg := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "c"}, Command: []string{"x"},
		Devices: []*runtimeapi.Device{
			{HostPath: "/dev/zero", ContainerPath: "/dev/ro", Permissions: "r"},
			{HostPath: "/dev/null", ContainerPath: "/dev/any"},
		},
	}
	devs := []specs.LinuxDevice{{Path: "/dev/ro", Type: "c", Major: 1, Minor: 5}, {Path: "/dev/any", Type: "c", Major: 1, Minor: 3}, {Path: "/dev/other", Type: "c", Major: 1, Minor: 7}}
	s, err := AppSpec(cfg, ContainerSpec{Sandbox: &runtimeapi.PodSandboxConfig{}, Devices: devs})
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]string{}
	for _, r := range s.Linux.Resources.Devices[1:] {
		got[*r.Minor] = r.Access
	}
	if want := map[int64]string{5: "r", 3: "rwm", 7: "rwm"}; !maps.Equal(got, want) || s.Linux.Resources.Devices[0].Allow {
		t.Errorf("device rules %v (first %+v), want deny all then %v", got, s.Linux.Resources.Devices[0], want)
	}
}
