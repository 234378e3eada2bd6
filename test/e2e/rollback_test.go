package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// writeScript writes an executable shell script.
func writeScript(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
}

func (e *env) assertNoSandboxes() {
	e.t.Helper()
	resp, err := e.rt.ListPodSandbox(e.ctx(), &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		e.t.Fatal(err)
	}
	if len(resp.Items) != 0 {
		e.t.Errorf("sandboxes left after a failed RunPodSandbox: %v", resp.Items)
	}
}

// A plugin after the bridge fails ADD: the bridge's veth and IP, the netns,
// the infra and every file must be gone.
func TestRollbackOnCNIFailure(t *testing.T) {
	t.Parallel()
	pluginDir, err := os.MkdirTemp("", "he2e-plugins-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pluginDir) })
	writeScript(t, filepath.Join(pluginDir, "failadd"), `case "$CNI_COMMAND" in
ADD) echo '{"cniVersion":"1.0.0","code":11,"msg":"injected CNI failure"}'; exit 1;;
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}';;
esac
exit 0
`)
	e := newEnv(t, func(en *env) {
		en.plugins = en.bridgePlugin() + `, {"type": "failadd"}`
		en.extraConfig = "" // set below, after the dirs exist
	})
	// Plugins from our dir first, then the system's.
	cfg, _ := os.ReadFile(e.configPath)
	cfg = []byte(strings.Replace(string(cfg), `bin_dirs = [`, fmt.Sprintf(`bin_dirs = [%q, `, pluginDir), 1))
	if err := os.WriteFile(e.configPath, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	e.start()
	_, err = e.rt.RunPodSandbox(e.ctx(), &runtimeapi.RunPodSandboxRequest{Config: e.podConfig("cnifail")})
	if err == nil || !strings.Contains(err.Error(), "injected CNI failure") {
		t.Fatalf("RunPodSandbox = %v, want the plugin's error", err)
	}
	e.assertNoSandboxes()
	e.assertNoLeaks()
}

// The handler's runtime fails to start the infra: the network that was set
// up meanwhile is torn down.
func TestRollbackOnRuntimeFailure(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "he2e-rt-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	broken := filepath.Join(dir, "broken-runtime")
	writeScript(t, broken, `for a; do [ "$a" = delete ] && exit 0; done
echo "injected runtime failure" >&2
exit 1
`)
	e := newEnv(t, withConfig(fmt.Sprintf("[runtimes.broken]\npath = %q\n", broken)))
	e.start()
	_, err = e.rt.RunPodSandbox(e.ctx(), &runtimeapi.RunPodSandboxRequest{Config: e.podConfig("rtfail"), RuntimeHandler: "broken"})
	if err == nil || !strings.Contains(err.Error(), "injected runtime failure") {
		t.Fatalf("RunPodSandbox = %v, want the runtime's error", err)
	}
	e.assertNoSandboxes()
	e.assertNoLeaks()

	// A real runc failure late in container setup: a sysctl that does not
	// exist fails inside runc init.
	cfg := e.podConfig("badsysctl")
	cfg.Linux.Sysctls = map[string]string{"net.ipv4.husk_no_such_sysctl": "1"}
	if _, err := e.rt.RunPodSandbox(e.ctx(), &runtimeapi.RunPodSandboxRequest{Config: cfg}); err == nil {
		t.Fatal("RunPodSandbox with a missing sysctl succeeded")
	}
	e.assertNoSandboxes()
	e.assertNoLeaks()
}

// A pod with a user namespace whose mapped root cannot reach huskd's state
// dir (a dir above it is 0700, as a mktemp dir is) fails with what to fix,
// leaves nothing behind, and starts once the dir is searchable.
func TestUsernsPodUnderPrivateDir(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start()
	mapping := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 400000, Length: 65536}}
	cfg := e.podConfig("userns-private")
	cfg.Linux.SecurityContext.NamespaceOptions.UsernsOptions = &runtimeapi.UserNamespace{
		Mode: runtimeapi.NamespaceMode_POD, Uids: mapping, Gids: mapping}
	if err := os.Chmod(e.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := e.rt.RunPodSandbox(e.ctx(), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err == nil || !strings.Contains(err.Error(), e.dir+" is mode 0700") || !strings.Contains(err.Error(), "searchable by others") {
		t.Fatalf("RunPodSandbox = %v, want it to name %s and what it lacks", err, e.dir)
	}
	e.assertNoSandboxes()
	e.assertNoLeaks()
	if err := os.Chmod(e.dir, 0o711); err != nil {
		t.Fatal(err)
	}
	e.runPod(cfg, "")
}

// A kubelet that gives up cancels the request: whatever was done is undone.
func TestRollbackOnCancelledRequest(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start()
	for _, after := range []time.Duration{5 * time.Millisecond, 30 * time.Millisecond, 60 * time.Millisecond} {
		ctx, cancel := context.WithTimeout(context.Background(), after)
		_, err := e.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: e.podConfig("cancel")})
		cancel()
		if c := status.Code(err); err != nil && c != codes.DeadlineExceeded && c != codes.Canceled {
			t.Errorf("cancelled after %s: %v", after, err)
		}
		// A call may finish on the server just as the client's deadline
		// passes: its sandbox is READY, and the kubelet's retry with the
		// same config would get it. Anything else half-made is a leak.
		resp, err := e.rt.ListPodSandbox(e.ctx(), &runtimeapi.ListPodSandboxRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range resp.Items {
			if p.State != runtimeapi.PodSandboxState_SANDBOX_READY {
				t.Errorf("cancelled after %s: half-made sandbox %s %s", after, p.Id, p.State)
			}
			e.stopRemove(p.Id)
		}
		e.assertNoLeaks()
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start()
	tests := []struct {
		name    string
		mutate  func(c *runtimeapi.PodSandboxConfig)
		handler string
		code    codes.Code
		field   string
	}{
		{"no config", func(c *runtimeapi.PodSandboxConfig) { *c = runtimeapi.PodSandboxConfig{} }, "", codes.InvalidArgument, "config.metadata"},
		{"name traversal", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "../../etc" }, "", codes.InvalidArgument, "config.metadata.name"},
		{"namespace slash", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Namespace = "a/b" }, "", codes.InvalidArgument, "config.metadata.namespace"},
		{"uid NUL", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Uid = "a\x00" }, "", codes.InvalidArgument, "config.metadata.uid"},
		{"long name", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = strings.Repeat("x", 300) }, "", codes.InvalidArgument, "config.metadata.name"},
		{"log dir relative", func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "../logs" }, "", codes.InvalidArgument, "config.log_directory"},
		{"unknown namespace mode", func(c *runtimeapi.PodSandboxConfig) { c.Linux.SecurityContext.NamespaceOptions.Ipc = 9 }, "", codes.InvalidArgument, "namespace_options.ipc"},
		{"unknown protocol", func(c *runtimeapi.PodSandboxConfig) {
			c.PortMappings = []*runtimeapi.PortMapping{{Protocol: 5, ContainerPort: 80}}
		}, "", codes.InvalidArgument, "config.port_mappings[0].protocol"},
		{"unknown handler", func(c *runtimeapi.PodSandboxConfig) {}, "nosuch", codes.InvalidArgument, "nosuch"},
	}
	for _, tt := range tests {
		cfg := e.podConfig("bad")
		tt.mutate(cfg)
		_, err := e.rt.RunPodSandbox(e.ctx(), &runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: tt.handler})
		if status.Code(err) != tt.code || !strings.Contains(err.Error(), tt.field) {
			t.Errorf("%s: %v; want %s naming %q", tt.name, err, tt.code, tt.field)
		}
	}
	e.assertNoSandboxes()
	e.assertNoLeaks()
	if exists("/etc/e2e") || exists(filepath.Join(e.dir, "..", "logs")) {
		t.Error("bad input wrote outside husk's directories")
	}
}

// A CNI DEL that fails keeps the sandbox NOTREADY with its netns, and the
// next stop retries it.
func TestFailedDelIsRetried(t *testing.T) {
	t.Parallel()
	pluginDir, err := os.MkdirTemp("", "he2e-plugins-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pluginDir) })
	marker := filepath.Join(pluginDir, "fail-del")
	writeScript(t, filepath.Join(pluginDir, "faildel"), fmt.Sprintf(`case "$CNI_COMMAND" in
ADD) echo '{"cniVersion":"1.0.0"}';;
DEL) if [ -e %q ]; then echo '{"cniVersion":"1.0.0","code":11,"msg":"injected DEL failure"}'; exit 1; fi;;
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}';;
esac
exit 0
`, marker))
	e := newEnv(t, func(en *env) { en.plugins = `{"type": "faildel"}, ` + en.bridgePlugin() })
	cfg, _ := os.ReadFile(e.configPath)
	cfg = []byte(strings.Replace(string(cfg), `bin_dirs = [`, fmt.Sprintf(`bin_dirs = [%q, `, pluginDir), 1))
	if err := os.WriteFile(e.configPath, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	e.start()
	id := e.runPod(e.podConfig("faildel"), "")
	_, info := e.status(id)
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = e.rt.StopPodSandbox(e.ctx(), &runtimeapi.StopPodSandboxRequest{PodSandboxId: id})
	if err == nil || !strings.Contains(err.Error(), "injected DEL failure") {
		t.Fatalf("stop with failing DEL = %v", err)
	}
	if st, _ := e.status(id); st.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Errorf("after failed DEL: %s", st.State)
	}
	if !exists(info.NetnsPath) {
		t.Error("netns released before DEL succeeded")
	}
	// Remove cannot skip the DEL either; and a restart does not forget it.
	if _, err := e.rt.RemovePodSandbox(e.ctx(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err == nil {
		t.Error("remove succeeded with a failing DEL")
	}
	e.kill9()
	e.start()
	os.Remove(marker)
	e.stopRemove(id)
	e.assertNoLeaks(id)
}
