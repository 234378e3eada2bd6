package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestDaemonBasics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.start()
	ctx := e.ctx()

	v, err := e.rt.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil || v.RuntimeName != "husk" || v.RuntimeApiVersion != "v1" {
		t.Errorf("Version = %v, %v", v, err)
	}
	fi, err := os.Stat(e.socket)
	if err != nil || fi.Mode().Perm() != 0o660 || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("socket mode %v, %v", fi.Mode(), err)
	}
	st, err := e.rt.Status(ctx, &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.Status.Conditions {
		if !c.Status {
			t.Errorf("condition %s false: %s %s", c.Type, c.Reason, c.Message)
		}
	}
	var cfg map[string]any
	if err := json.Unmarshal([]byte(st.Info["config"]), &cfg); err != nil || cfg["root"] != e.root {
		t.Errorf("verbose config %v: %q", err, st.Info["config"])
	}
	handlers := map[string]bool{}
	for _, h := range st.RuntimeHandlers {
		handlers[h.Name] = true
	}
	if !handlers["runc"] || !handlers["crun"] || len(st.RuntimeHandlers) == 0 || st.RuntimeHandlers[0].Name != "" {
		t.Errorf("handlers %v, want the default (\"\") first, then runc and crun", st.RuntimeHandlers)
	}
	if !st.GetFeatures().GetSupplementalGroupsPolicy() {
		t.Error("Status does not advertise the supplemental groups policy")
	}
	// The kubelet and crictl check the ImageService before anything else.
	img := runtimeapi.NewImageServiceClient(e.conn)
	fs, err := img.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
	if err != nil || len(fs.ImageFilesystems) != 1 || fs.ImageFilesystems[0].FsId.GetMountpoint() == "" ||
		fs.ImageFilesystems[0].InodesUsed.GetValue() == 0 {
		t.Errorf("ImageFsInfo = %v, %v", fs, err)
	}
	if l, err := img.ListImages(ctx, &runtimeapi.ListImagesRequest{}); err != nil || len(l.Images) != 0 {
		t.Errorf("ListImages = %v, %v", l, err)
	}
	rc, err := e.rt.RuntimeConfig(ctx, &runtimeapi.RuntimeConfigRequest{})
	if err != nil || rc.Linux.CgroupDriver != runtimeapi.CgroupDriver_CGROUPFS {
		t.Errorf("RuntimeConfig = %v, %v", rc, err)
	}

	// A second huskd on the same root is refused and leaves the first alone.
	out, err := exec.Command(filepath.Join(binDir, "huskd"), "--config", e.configPath, "--root", e.root,
		"--state", e.state+"2", "--listen", e.socket+"2").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another huskd") {
		t.Errorf("second huskd: %v: %s", err, out)
	}
	// A second huskd on another root but the same socket is refused too.
	out, err = exec.Command(filepath.Join(binDir, "huskd"), "--config", e.configPath, "--root", e.root+"2",
		"--state", e.state+"2", "--listen", e.socket).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use") {
		t.Errorf("second huskd on the same socket: %v: %s", err, out)
	}
	if _, err := e.rt.Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
		t.Errorf("first huskd hurt by the second: %v", err)
	}
	os.RemoveAll(e.root + "2")
	os.RemoveAll(e.state + "2")

	// SIGTERM leaves pods running; after a crash the stale socket is replaced.
	id := e.runPod(e.podConfig("survivor"), "")
	_, info := e.status(id)
	if err := e.stop(); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	if !alive(info.PID) {
		t.Fatal("SIGTERM of huskd killed a pod")
	}
	e.start()
	e.kill9()
	if _, err := os.Stat(e.socket); err != nil {
		t.Fatalf("socket gone after kill -9: %v", err)
	}
	e.start()
	if st, _ := e.status(id); st.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Errorf("pod after restarts: %s", st.State)
	}
	e.stopRemove(id)
	e.assertNoLeaks(id)
}

func TestNetworkNotReadyWithoutCNIConfig(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withPlugins("-"))
	e.start()
	st, err := e.rt.Status(e.ctx(), &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.Status.Conditions {
		if c.Type == runtimeapi.NetworkReady && (c.Status || c.Reason == "" || !strings.Contains(c.Message, e.confDir)) {
			t.Errorf("NetworkReady = %v %q %q; want false with the reason", c.Status, c.Reason, c.Message)
		}
		if c.Type == runtimeapi.RuntimeReady && !c.Status {
			t.Errorf("RuntimeReady false: %s", c.Message)
		}
	}
	// Host-network pods still run.
	cfg := e.podConfig("hostnet")
	cfg.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
	id := e.runPod(cfg, "")
	e.stopRemove(id)
	e.assertNoLeaks(id)
}

// With write_default and an empty CNI dir, huskd writes its bridge network.
func TestDefaultNetworkWritten(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withPlugins("-"))
	cfg, _ := os.ReadFile(e.configPath)
	// Its own network name: host-local keeps the default network's
	// allocations in /var/lib/cni/networks/<name>, removed below.
	name := "e2e-" + e.bridge
	t.Cleanup(func() { os.RemoveAll(filepath.Join("/var/lib/cni/networks", name)) })
	s := strings.Replace(string(cfg), "write_default = false", "write_default = true\ndefault_name = \""+name+"\"\ndefault_bridge = \""+e.bridge+"\"\ndefault_subnet = \""+e.subnet.String()+"\"", 1)
	if err := os.WriteFile(e.configPath, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	e.start()
	files, _ := filepath.Glob(filepath.Join(e.confDir, "*.conflist"))
	if len(files) != 1 {
		t.Fatalf("conf dir holds %v", files)
	}
	b, _ := os.ReadFile(files[0])
	for _, want := range []string{`"bridge"`, e.bridge, e.subnet.String(), `"host-local"`, `"portmap"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("default network lacks %s:\n%s", want, b)
		}
	}
	id := e.runPod(e.podConfig("default"), "")
	st, _ := e.status(id)
	if st.Network.Ip == "" {
		t.Error("no IP from the default network")
	}
	e.stopRemove(id)
	// The default network's host-local keeps its allocations in the
	// system dir: check that this pod's address was released there.
	if b, err := os.ReadFile(filepath.Join("/var/lib/cni/networks", name, st.Network.Ip)); err == nil {
		t.Errorf("IP %s still allocated: %s", st.Network.Ip, b)
	}
	e.assertNoLeaks(id)
}

func TestConfigDefaultCommand(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(filepath.Join(binDir, "huskd"), "config", "default").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"root = '/var/lib/husk'", "[cni]", "conf_dir", "bin_dirs", "default_runtime", "[runtimes.runc]", "[runtimes.crun]"} {
		if !strings.Contains(string(out), key) {
			t.Errorf("default config lacks %q", key)
		}
	}
	p := filepath.Join(t.TempDir(), "bad.toml")
	_ = os.WriteFile(p, []byte("[cni]\nconfdir = \"/x\"\n"), 0o644)
	out, err = exec.Command(filepath.Join(binDir, "huskd"), "--config", p).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "cni.confdir") {
		t.Errorf("unknown key: %v: %s", err, out)
	}
}

// huskd is a child subreaper: what is orphaned below it comes back to it,
// and it reaps what nobody waits for.
func TestOrphansBelowHuskdAreReaped(t *testing.T) {
	t.Parallel()
	requireBusybox(t)
	dir, err := os.MkdirTemp("", "he2e-rt-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	leaky := filepath.Join(dir, "leaky-runtime")
	// Leaves a child behind that exits a moment after the runtime did.
	writeScript(t, leaky, `/bin/busybox sh -c 'sleep 0.3' </dev/null >/dev/null 2>&1 &
for a; do [ "$a" = delete ] && exit 0; done
echo "leaky runtime refuses" >&2
exit 1
`)
	e := newEnv(t, withConfig(fmt.Sprintf("[runtimes.leaky]\npath = %q\n", leaky)))
	e.start()
	_, _ = e.rt.RunPodSandbox(e.ctx(), &runtimeapi.RunPodSandboxRequest{Config: e.podConfig("leaky"), RuntimeHandler: "leaky"})
	huskd := e.daemon.Process.Pid
	deadline := time.Now().Add(10 * time.Second)
	sawZombie := false
	for {
		zombies := 0
		for _, p := range childrenOf(huskd) {
			if _, st := procCommState(p); st == "Z" {
				zombies++
			}
		}
		sawZombie = sawZombie || zombies > 0
		if sawZombie && zombies == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("zombies under huskd after 10s: %d (seen one: %v)", zombies, sawZombie)
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.assertNoLeaks()
}

func childrenOf(pid int) []int {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var out []int
	for _, task := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		for _, f := range strings.Fields(string(b)) {
			out = append(out, atoi(f))
		}
	}
	return out
}
