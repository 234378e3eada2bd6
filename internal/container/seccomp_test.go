package container

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

//lint:file-ignore SA1019 the deprecated seccomp_profile_path is tested on purpose

func TestApplySeccomp(t *testing.T) {
	local := filepath.Join(t.TempDir(), "profile.json")
	if err := os.WriteFile(local, []byte(`{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	profile := func(kind runtimeapi.SecurityProfile_ProfileType, ref string) *runtimeapi.LinuxContainerSecurityContext {
		return &runtimeapi.LinuxContainerSecurityContext{Seccomp: &runtimeapi.SecurityProfile{ProfileType: kind, LocalhostRef: ref}}
	}
	tests := []struct {
		name       string
		sc         *runtimeapi.LinuxContainerSecurityContext
		wantAction specs.LinuxSeccompAction // "" = no filter
		wantErr    func(error) bool
	}{
		{name: "unset", sc: &runtimeapi.LinuxContainerSecurityContext{}},
		{name: "unconfined", sc: profile(runtimeapi.SecurityProfile_Unconfined, "")},
		{name: "runtime default", sc: profile(runtimeapi.SecurityProfile_RuntimeDefault, ""), wantAction: specs.ActErrno},
		{name: "deprecated path", sc: &runtimeapi.LinuxContainerSecurityContext{SeccompProfilePath: "runtime/default"}, wantAction: specs.ActErrno},
		{name: "localhost", sc: profile(runtimeapi.SecurityProfile_Localhost, local), wantAction: specs.ActAllow},
		{name: "deprecated localhost path", sc: &runtimeapi.LinuxContainerSecurityContext{SeccompProfilePath: "localhost/" + local}, wantAction: specs.ActAllow},
		{name: "privileged ignores it", sc: &runtimeapi.LinuxContainerSecurityContext{Privileged: true, Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}}},
		{name: "missing file", sc: profile(runtimeapi.SecurityProfile_Localhost, "/no/such/profile.json"), wantErr: errdefs.IsNotFound},
		{name: "relative file", sc: profile(runtimeapi.SecurityProfile_Localhost, "profile.json"), wantErr: errdefs.IsInvalidArgument},
		{name: "unknown path", sc: &runtimeapi.LinuxContainerSecurityContext{SeccompProfilePath: "nonsense"}, wantErr: errdefs.IsInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{}}, Linux: &specs.Linux{}}
			err := applySeccomp(spec, tt.sc)
			if tt.wantErr != nil {
				if err == nil || !tt.wantErr(err) {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got specs.LinuxSeccompAction
			if spec.Linux.Seccomp != nil {
				got = spec.Linux.Seccomp.DefaultAction
			}
			if got != tt.wantAction {
				t.Errorf("default action %q, want %q", got, tt.wantAction)
			}
		})
	}
}

func TestApplyAppArmor(t *testing.T) {
	local := &runtimeapi.LinuxContainerSecurityContext{Apparmor: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "my-profile"}}
	tests := []struct {
		name    string
		sc      *runtimeapi.LinuxContainerSecurityContext
		enabled bool
		want    string
		wantErr func(error) bool
	}{
		{name: "unset", sc: &runtimeapi.LinuxContainerSecurityContext{}},
		{name: "runtime default without apparmor", sc: &runtimeapi.LinuxContainerSecurityContext{Apparmor: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}}},
		{name: "localhost without apparmor", sc: local, wantErr: errdefs.IsFailedPrecondition},
		{name: "localhost", sc: local, enabled: true, want: "my-profile"},
		{name: "deprecated localhost", sc: &runtimeapi.LinuxContainerSecurityContext{ApparmorProfile: "localhost/p2"}, enabled: true, want: "p2"},
		{name: "unknown deprecated", sc: &runtimeapi.LinuxContainerSecurityContext{ApparmorProfile: "bogus"}, wantErr: errdefs.IsInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := &specs.Spec{Process: &specs.Process{}, Linux: &specs.Linux{}}
			err := applyAppArmor(spec, tt.sc, tt.enabled)
			if tt.wantErr != nil {
				if err == nil || !tt.wantErr(err) {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err != nil || spec.Process.ApparmorProfile != tt.want {
				t.Errorf("profile %q, %v; want %q", spec.Process.ApparmorProfile, err, tt.want)
			}
		})
	}
}
