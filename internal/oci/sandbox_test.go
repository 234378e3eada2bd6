package oci

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func nsTypes(s *specs.Spec) map[specs.LinuxNamespaceType]string {
	m := map[specs.LinuxNamespaceType]string{}
	for _, ns := range s.Linux.Namespaces {
		m[ns.Type] = ns.Path
	}
	return m
}

func TestInfraSpecNamespaces(t *testing.T) {
	tests := []struct {
		name     string
		opts     *runtimeapi.NamespaceOption
		want     []specs.LinuxNamespaceType
		absent   []specs.LinuxNamespaceType
		hostname string
	}{
		{"defaults", nil,
			[]specs.LinuxNamespaceType{specs.MountNamespace, specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.NetworkNamespace},
			nil, "web"},
		{"shared pid", &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD},
			[]specs.LinuxNamespaceType{specs.PIDNamespace}, nil, "web"},
		{"host network", &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
			[]specs.LinuxNamespaceType{specs.PIDNamespace, specs.IPCNamespace},
			[]specs.LinuxNamespaceType{specs.NetworkNamespace, specs.UTSNamespace}, ""},
		{"host pid and ipc", &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_NODE},
			[]specs.LinuxNamespaceType{specs.NetworkNamespace},
			[]specs.LinuxNamespaceType{specs.PIDNamespace, specs.IPCNamespace}, "web"},
	}
	for _, tt := range tests {
		cfg := &runtimeapi.PodSandboxConfig{
			Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "ns", Uid: "u"},
			Hostname: "web",
			Linux:    &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: tt.opts}},
		}
		s := InfraSpec(cfg, SandboxSpec{ID: "abc", RootfsPath: "/r", NetnsPath: "/run/husk/netns/abc", CgroupsPath: "/husk/abc", OOMScoreAdj: -998})
		got := nsTypes(s)
		for _, w := range tt.want {
			if _, ok := got[w]; !ok {
				t.Errorf("%s: namespace %s missing", tt.name, w)
			}
		}
		for _, a := range tt.absent {
			if _, ok := got[a]; ok {
				t.Errorf("%s: namespace %s present, want the host's", tt.name, a)
			}
		}
		if p, ok := got[specs.NetworkNamespace]; ok && p != "/run/husk/netns/abc" {
			t.Errorf("%s: netns path %q", tt.name, p)
		}
		if s.Hostname != tt.hostname {
			t.Errorf("%s: hostname %q, want %q", tt.name, s.Hostname, tt.hostname)
		}
		if !s.Root.Readonly || s.Process.Args[0] != InfraPath || *s.Process.OOMScoreAdj != -998 {
			t.Errorf("%s: root/args/oom wrong: %+v %+v", tt.name, s.Root, s.Process)
		}
		if s.Annotations[AnnotationContainerType] != ContainerTypeSandbox || s.Annotations[AnnotationSandboxID] != "abc" {
			t.Errorf("%s: annotations %v", tt.name, s.Annotations)
		}
	}
}

// CgroupsPath puts id under the effective parent, and CgroupParentOf finds
// that parent again (recovery of records that did not keep it).
func TestCgroupsPath(t *testing.T) {
	tests := []struct {
		driver, parent, want, effective string
		bad                             bool
	}{
		{"cgroupfs", "/kubepods/besteffort/podx", "/kubepods/besteffort/podx/id", "/kubepods/besteffort/podx", false},
		{"cgroupfs", "/husk/", "/husk/id", "/husk", false},
		{"cgroupfs", "", "/id", "/", false},
		{"cgroupfs", "kubepods", "", "", true},
		{"cgroupfs", "/a/../b", "", "", true},
		{"systemd", "kubepods-besteffort-podx.slice", "kubepods-besteffort-podx.slice:husk:id", "kubepods-besteffort-podx.slice", false},
		{"systemd", "", "system.slice:husk:id", "system.slice", false},
		{"systemd", "/kubepods", "", "", true},
	}
	for _, tt := range tests {
		got, err := CgroupsPath(tt.driver, tt.parent, "id")
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("CgroupsPath(%s, %q) = %q, %v; want %q, bad=%v", tt.driver, tt.parent, got, err, tt.want, tt.bad)
		}
		if p, err := CgroupParent(tt.driver, tt.parent); (err != nil) != tt.bad || p != tt.effective {
			t.Errorf("CgroupParent(%s, %q) = %q, %v; want %q, bad=%v", tt.driver, tt.parent, p, err, tt.effective, tt.bad)
		}
		if tt.bad {
			continue
		}
		if p := CgroupParentOf(got, "id"); p != tt.effective {
			t.Errorf("CgroupParentOf(%q) = %q, want %q", got, p, tt.effective)
		}
	}
}
