package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// cdiSpec is a CDI spec of vendor husk.test, class dev: edits for every
// device of it (env, a mount, a createRuntime hook that saves the state
// it is given, an additional GID) and devices, one of them a node made
// with mknod outside /dev.
const cdiSpec = `{"cdiVersion": "0.7.0", "kind": "husk.test/dev",
 "containerEdits": {
  "env": ["CDI_SPEC=yes"], "additionalGids": [4242],
  "mounts": [{"hostPath": "%[1]s/cdi-mnt", "containerPath": "/cdi-mnt", "type": "bind", "options": ["ro", "bind"]}],
  "hooks": [{"hookName": "createRuntime", "path": "/bin/sh", "args": ["sh", "-c", "cat >> %[1]s/hook-state"]}]},
 "devices": [
  {"name": "zero", "containerEdits": {"env": ["CDI_DEVICE=zero"],
   "deviceNodes": [{"path": "/dev/cdi-zero", "hostPath": "%[1]s/devs/zero", "permissions": "rw"}]}},
  {"name": "ro", "containerEdits": {"deviceNodes": [{"path": "/dev/cdi-ro", "hostPath": "%[1]s/devs/demo", "permissions": "r"}]}},
  {"name": "annotated", "containerEdits": {"env": ["CDI_ANNOTATED=yes"]}},
  {"name": "podonly", "containerEdits": {"env": ["CDI_POD=yes"]}}]}`

// CDI devices, with runc and crun: from ContainerConfig.CDI_devices and the
// container's cdi.k8s.io/* annotations (not the pod's), out of spec files
// written after huskd started; every edit reaches the container. An
// unknown device, a device of a spec that does not parse, a name that is
// not qualified fail CreateContainer naming the device and the spec file,
// and undo what the create did (an image volume mounted before).
func TestCDIDevices(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "he2e-cdi-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	specDirs := []string{filepath.Join(dir, "static"), filepath.Join(dir, "dynamic")}
	e, _, ids := imageVolumeEnv(t, withConfig(fmt.Sprintf("[cdi]\nspec_dirs = [%q, %q]\n", specDirs[0], specDirs[1])))

	// Written now that huskd runs, in a dir that did not exist.
	for _, d := range append(specDirs, filepath.Join(dir, "cdi-mnt"), filepath.Join(dir, "devs")) {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "cdi-mnt", "f"), []byte("from-cdi-mount"), 0o644); err != nil {
		t.Fatal(err)
	}
	mknod(t, filepath.Join(dir, "devs", "zero"), 1, 5)
	mknod(t, filepath.Join(dir, "devs", "demo"), 42, 3)
	specFile := filepath.Join(specDirs[1], "husk-test.json")
	if err := os.WriteFile(specFile, []byte(fmt.Sprintf(cdiSpec, dir)), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, handler := range []string{"runc", "crun"} {
		t.Run(handler, func(t *testing.T) {
			pod := e.podConfig("cdi-" + handler)
			pod.Annotations["cdi.k8s.io/pod"] = "husk.test/dev=podonly"
			podID := e.runPod(pod, handler)
			cfg := ctrConfig("gpu", "sleep", "3600")
			cfg.CDIDevices = []*runtimeapi.CDIDevice{{Name: "husk.test/dev=zero"}, {Name: "husk.test/dev=ro"}}
			cfg.Annotations = map[string]string{"cdi.k8s.io/e2e": "husk.test/dev=annotated,husk.test/dev=zero"}
			id := e.run(podID, pod, cfg)
			checks := []struct{ cmd, want string }{
				{"echo $CDI_SPEC $CDI_DEVICE $CDI_ANNOTATED ${CDI_POD:-no-pod-device}", "yes zero yes no-pod-device\n"},
				{"stat -c %t:%T /dev/cdi-zero; head -c 3 /dev/cdi-zero | tr '\\0' z; echo", "1:5\nzzz\n"},
				{"echo x > /dev/cdi-zero && echo wrote", "wrote\n"},
				{"cat /cdi-mnt/f; touch /cdi-mnt/x 2>/dev/null || echo ' read-only'", "from-cdi-mount read-only\n"},
				{"for g in $(id -G); do test $g = 4242 && echo in-4242; done", "in-4242\n"},
			}
			for _, c := range checks {
				if r := e.exec(id, 10, "sh", "-c", c.cmd); string(r.Stdout) != c.want {
					t.Errorf("%s: %q (stderr %q), want %q", c.cmd, r.Stdout, r.Stderr, c.want)
				}
			}
			e.checkDeviceAccess(id, "/dev/cdi-ro", "r")
			if b, _ := os.ReadFile(filepath.Join(dir, "hook-state")); !strings.Contains(string(b), `"id":"`+id+`"`) {
				t.Errorf("the createRuntime hook did not run for %s: it saved %q", id, b)
			}
			e.stopRemove(podID)
			e.assertNoLeaks(podID, id)
		})
	}

	broken := filepath.Join(specDirs[0], "broken.yaml")
	if err := os.WriteFile(broken, []byte("cdiVersion: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pod := e.podConfig("cdi-bad")
	podID := e.runPod(pod, "")
	bad := []struct {
		name, device string
		code         codes.Code
		want         []string
	}{
		{"unknown", "husk.test/dev=nosuch", codes.FailedPrecondition, []string{`unknown CDI devices in the spec dirs ` + strings.Join(specDirs, ", ") + `: "husk.test/dev=nosuch" (not in ` + specFile + ")"}},
		{"broken spec", "broken.test/dev=x", codes.FailedPrecondition, []string{`"broken.test/dev=x" (no spec file of broken.test/dev)`, "spec files with errors: " + broken + ": "}},
		{"not qualified", "gpu0", codes.InvalidArgument, []string{`cdi_devices[0]: "gpu0" is not a qualified CDI device name`}},
	}
	for _, tt := range bad {
		cfg := ctrConfig("bad", "true")
		cfg.CDIDevices = []*runtimeapi.CDIDevice{{Name: tt.device}}
		// Mounted, with its layers held, before the devices fail.
		cfg.Mounts = []*runtimeapi.Mount{imageMount("/volume", ids[kittenRef], kittenRef, "")}
		_, err := e.rt.CreateContainer(e.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
		if status.Code(err) != tt.code {
			t.Errorf("%s: %v, want %s", tt.name, err, tt.code)
		}
		for _, w := range tt.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v, want it to say %q", tt.name, err, w)
			}
		}
		e.assertNoContainerLeft()
	}
	e.stopRemove(podID)
	e.assertNoLeaks(podID)

	out, err := exec.Command(filepath.Join(binDir, "huskd"), "config", "default").Output()
	if err != nil || !strings.Contains(string(out), "[cdi]") || !strings.Contains(string(out), "spec_dirs = ['/etc/cdi', '/var/run/cdi']") {
		t.Errorf("huskd config default: %v\n%s", err, out)
	}
}
