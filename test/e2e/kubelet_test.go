//go:build kubelet

// The kubelet itself against huskd: make kubelet-e2e (see the README).
// Built only with -tags kubelet, since it needs a kubelet binary (built
// once by scripts/kubelet.sh); asked for, it never skips: a missing
// kubelet fails it.

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// kubeletVersion is the kubelet the test is written against.
const kubeletVersion = "v1.36.3"

// kubeletBinary is HUSK_KUBELET, which make kubelet-e2e sets.
func kubeletBinary(t *testing.T) string {
	t.Helper()
	k := os.Getenv("HUSK_KUBELET")
	if k == "" {
		t.Fatal("HUSK_KUBELET is not set: run make kubelet-e2e, which builds the kubelet " + kubeletVersion + " once (scripts/kubelet.sh)")
	}
	out, err := exec.Command(k, "--version").Output()
	if err != nil || strings.TrimSpace(string(out)) != "Kubernetes "+kubeletVersion {
		t.Fatalf("HUSK_KUBELET=%s: %q, %v; want Kubernetes %s", k, out, err, kubeletVersion)
	}
	return k
}

// kubelet is a standalone kubelet (no API server: static pods from a
// directory) with EventedPLEG on, over an env's huskd.
type kubelet struct {
	t         *testing.T
	e         *env
	dir       string
	manifests string
	log       string
	cmd       *exec.Cmd
	// exited is closed when the kubelet process ended.
	exited chan struct{}
}

// startKubelet writes the kubelet's config and starts it. Its cgroup root
// is the env's cgroup parent, not "/": a node conformance run may have a
// kubelet of its own on this machine, and a kubelet removes the pod
// cgroups under its root that it does not know. It serves no port.
func startKubelet(t *testing.T, e *env, binary string) *kubelet {
	t.Helper()
	k := &kubelet{t: t, e: e, dir: filepath.Join(e.dir, "kubelet")}
	k.manifests = filepath.Join(k.dir, "manifests")
	k.log = filepath.Join(e.dir, "kubelet.log")
	for _, d := range []string{k.manifests, filepath.Join(k.dir, "root"), filepath.Join(k.dir, "pods")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	makeCgroupRoot(t, e.cgroupParent)
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
featureGates:
  EventedPLEG: true
  CRIListStreaming: true
  ContainerStopSignals: true
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %s
failSwapOn: false
makeIPTablesUtilChains: false
protectKernelDefaults: false
staticPodPath: %s
fileCheckFrequency: 1s
podLogsDir: %s
containerRuntimeEndpoint: unix://%s
enableServer: false
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
healthzPort: 0
readOnlyPort: 0
# The restart must come from the events: the relist (300s with
# EventedPLEG) and the pod workers' resync are both far off.
syncFrequency: 5m
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%%"
  imagefs.available: "1%%"
  nodefs.inodesFree: "1%%"
`, e.cgroupParent, k.manifests, filepath.Join(k.dir, "pods"), e.socket)
	cfgPath := filepath.Join(k.dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(k.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	k.cmd = exec.Command(binary, "--config", cfgPath, "--root-dir", filepath.Join(k.dir, "root"),
		"--cert-dir", filepath.Join(k.dir, "pki"), "--hostname-override", k.node(), "--v", "4")
	k.cmd.Stdout, k.cmd.Stderr = logf, logf
	k.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := k.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	k.exited = make(chan struct{})
	go func() { _ = k.cmd.Wait(); close(k.exited) }()
	t.Cleanup(k.stop)
	return k
}

// makeCgroupRoot makes the kubelet's cgroup root in every hierarchy (it
// refuses a root that does not exist); a v1 cpuset gets its parent's CPUs
// and memory nodes, which a new one lacks.
func makeCgroupRoot(t *testing.T, root string) {
	t.Helper()
	hier, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range append(hier, "/sys/fs/cgroup") {
		if !fileExists(filepath.Join(h, "cgroup.procs")) {
			continue
		}
		d := filepath.Join(h, root)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("cgroup root: %v", err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if b, err := os.ReadFile(filepath.Join(h, f)); err == nil {
				_ = os.WriteFile(filepath.Join(d, f), b, 0o644)
			}
		}
	}
}

// stop ends the kubelet (SIGTERM, then SIGKILL) and unmounts what it
// mounted under its dir (it bind mounts its root dir onto itself).
func (k *kubelet) stop() {
	if k.cmd == nil {
		return
	}
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.exited:
	case <-time.After(15 * time.Second):
		_ = k.cmd.Process.Kill()
		<-k.exited
	}
	k.cmd = nil
	if k.t.Failed() {
		// The env's dir goes with the test: keep the whole log.
		kept := filepath.Join(os.TempDir(), "husk-kubelet-"+k.node()+".log")
		if b, err := os.ReadFile(k.log); err == nil && os.WriteFile(kept, b, 0o644) == nil {
			k.t.Logf("the kubelet's log is kept in %s", kept)
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	lines := strings.Split(string(mi), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if f := strings.Fields(lines[i]); len(f) > 4 && strings.HasPrefix(f[4], k.dir+"/") {
			_ = unix.Unmount(f[4], unix.MNT_DETACH)
		}
	}
	for _, l := range k.logLinks() {
		_ = os.Remove(l)
	}
}

// containerLogLinks is where every kubelet links its containers' logs,
// whatever its config says.
const containerLogLinks = "/var/log/containers"

// logLinks are the links in /var/log/containers to this kubelet's logs.
func (k *kubelet) logLinks() []string {
	var out []string
	ents, _ := os.ReadDir(containerLogLinks)
	for _, en := range ents {
		p := filepath.Join(containerLogLinks, en.Name())
		if dst, err := os.Readlink(p); err == nil && strings.HasPrefix(dst, k.dir+"/") {
			out = append(out, p)
		}
	}
	return out
}

// huskdInfo is huskd's log without its debug lines (the reads the
// kubelet and this test poll with).
func huskdInfo(e *env) string {
	var out []string
	for _, l := range strings.Split(e.logs(), "\n") {
		if !strings.Contains(l, "level=DEBUG") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// node is the kubelet's node name: a static pod's name ends with it.
func (k *kubelet) node() string { return filepath.Base(k.e.cgroupParent) }

func (k *kubelet) logs() string {
	b, _ := os.ReadFile(k.log)
	return string(b)
}

// tail is the end of the kubelet's log, for failure messages.
func (k *kubelet) tail() string {
	l := k.logs()
	if len(l) > 8000 {
		l = l[len(l)-8000:]
	}
	return l
}

// running waits for a running container of the given name and attempt.
func (k *kubelet) running(name string, attempt uint32, within time.Duration) *runtimeapi.Container {
	k.t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, err := k.e.rt.ListContainers(k.e.ctx(), &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
			LabelSelector: map[string]string{"io.kubernetes.container.name": name},
			State:         &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}}})
		if err != nil {
			k.t.Fatal(err)
		}
		for _, c := range resp.Containers {
			if c.Metadata.Attempt == attempt {
				return c
			}
		}
		select {
		case <-k.exited:
			k.t.Fatalf("the kubelet exited:\n%s", k.tail())
		default:
		}
		if time.Now().After(deadline) {
			k.t.Fatalf("no running %s (attempt %d) within %s\nkubelet log (end):\n%s\nhuskd log (info and above):\n%s",
				name, attempt, within, k.tail(), huskdInfo(k.e))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The kubelet with EventedPLEG brings a static pod up over huskd, and
// restarts its container when it is killed: through the events, since the
// relist and the resync are minutes away. With ContainerStopSignals its
// lifecycle.stopSignal reaches huskd, and with CRIListStreaming it lists
// through the Stream* calls.
func TestKubeletEventedPLEG(t *testing.T) {
	binary := kubeletBinary(t)
	iptablesBefore := iptablesRules(t)
	e := containerEnv(t)
	events := e.subscribe()
	k := startKubelet(t, e, binary)
	start := time.Now()
	pod := `apiVersion: v1
kind: Pod
metadata:
  name: pleg
  namespace: default
spec:
  os: {name: linux}
  restartPolicy: Always
  terminationGracePeriodSeconds: 10
  containers:
  - name: main
    image: busybox:e2e
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'exit 42' USR2; while true; do sleep 0.1; done"]
    lifecycle:
      stopSignal: SIGUSR2
`
	manifest := filepath.Join(k.manifests, "pleg.yaml")
	if err := os.WriteFile(manifest, []byte(pod), 0o644); err != nil {
		t.Fatal(err)
	}
	first := k.running("main", 0, 3*time.Minute)
	up := time.Since(start)
	t.Logf("pod up %s after the kubelet started", up.Round(time.Millisecond))

	st, err := e.rt.ContainerStatus(e.ctx(), &runtimeapi.ContainerStatusRequest{ContainerId: first.Id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	if st.Status.StopSignal != runtimeapi.Signal_SIGNAL_SIGUSR2 {
		t.Errorf("stop_signal of the kubelet's container = %s, want SIGUSR2 (lifecycle.stopSignal)", st.Status.StopSignal)
	}
	var info struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(st.Info["info"]), &info); err != nil || info.PID <= 1 {
		t.Fatalf("container pid %d in %q: %v", info.PID, st.Info["info"], err)
	}
	killed := time.Now()
	if err := unix.Kill(info.PID, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	second := k.running("main", 1, 60*time.Second)
	restart := time.Since(killed)
	t.Logf("killed container restarted in %s", restart.Round(time.Millisecond))
	if second.PodSandboxId != first.PodSandboxId {
		t.Errorf("restarted in another sandbox: %s, was %s", second.PodSandboxId, first.PodSandboxId)
	}

	// What huskd sent for the kill: the pod's sandbox status and the dead
	// container EXITED by SIGKILL.
	var got []*runtimeapi.ContainerEventResponse
	stopped := collect(t, events, first.Id, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, &got)
	var dead *runtimeapi.ContainerStatus
	for _, c := range stopped.ContainersStatuses {
		if c.Id == first.Id {
			dead = c
		}
	}
	if stopped.PodSandboxStatus.GetMetadata().GetName() != "pleg-"+k.node() || dead == nil || dead.ExitCode != 137 {
		t.Errorf("STOPPED event: sandbox %v, container %v", stopped.PodSandboxStatus.GetMetadata(), dead)
	}

	// The kubelet took both from its evented PLEG, and never fell back
	// to relisting.
	logs := k.logs()
	for _, want := range []string{
		"Received Container Stopped Event", first.Id,
		"Received Container Started Event", second.Id,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("the kubelet's log does not mention %q", want)
		}
	}
	for _, bad := range []string{"Fall back to Generic PLEG relisting", "nil PodSandboxStatus", "Evented PLEG: Failed to get container events"} {
		if strings.Contains(logs, bad) {
			t.Errorf("the kubelet's log says %q", bad)
		}
	}
	if len(e.lines("method=StreamPodSandboxes")) == 0 || len(e.lines("method=StreamContainers")) == 0 {
		t.Errorf("the kubelet did not list through StreamPodSandboxes and StreamContainers")
	}

	// Taking the manifest away stops the pod: with the kubelet's signal.
	if err := os.Remove(manifest); err != nil {
		t.Fatal(err)
	}
	if st := e.waitExited(second.Id, 60*time.Second); st.ExitCode != 42 {
		t.Errorf("the kubelet stopped the container with exit %d, want 42 (its SIGUSR2 trapped)", st.ExitCode)
	}
	waitState(t, e, second.PodSandboxId, runtimeapi.PodSandboxState_SANDBOX_NOTREADY, 60*time.Second)
	k.stopAndAssertClean(iptablesBefore)
	t.Logf("figures: pod up %s, restart after SIGKILL %s, whole test %s", up.Round(time.Millisecond),
		restart.Round(time.Millisecond), time.Since(start).Round(time.Second))
}

// stopAndAssertClean stops the kubelet, removes the pods it left, and
// fails on anything leaked: huskd's (netns, mounts, veths, processes...),
// the kubelet's iptables rules and processes.
func (k *kubelet) stopAndAssertClean(iptablesBefore string) {
	k.t.Helper()
	k.stop()
	resp, err := k.e.rt.ListPodSandbox(k.e.ctx(), &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		k.t.Fatal(err)
	}
	var ids []string
	for _, p := range resp.Items {
		k.e.stopRemove(p.Id)
		ids = append(ids, p.Id)
	}
	k.e.assertNoLeaks(ids...)
	if after := iptablesRules(k.t); after != iptablesBefore && !otherKubelet(k) {
		k.t.Errorf("iptables rules changed:\nbefore:\n%s\nafter:\n%s", iptablesBefore, after)
	}
	if b, _ := exec.Command("pgrep", "-f", k.dir).Output(); len(bytes.TrimSpace(b)) > 0 {
		k.t.Errorf("processes of the kubelet left: %s", b)
	}
}

// otherKubelet reports whether a kubelet other than k runs here (a node
// conformance run): its KUBE- rules may come and go meanwhile.
func otherKubelet(k *kubelet) bool {
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range cmdlines {
		b, _ := os.ReadFile(p)
		if args := bytes.Split(b, []byte{0}); filepath.Base(string(args[0])) == "kubelet" && !bytes.Contains(b, []byte(k.dir)) {
			return true
		}
	}
	return false
}

// iptablesRules are the machine's rules that name a KUBE- chain: the
// kubelet's, which it must not add with makeIPTablesUtilChains off.
func iptablesRules(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("iptables-save").Output()
	if err != nil {
		t.Fatal(err)
	}
	var kube []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "KUBE-") {
			kube = append(kube, l)
		}
	}
	return strings.Join(kube, "\n")
}

// imageVolumePod is a static pod reading two image volumes, one of them
// also through a subPath (which the kubelet sends as image_sub_path), to
// its log; then it waits to be stopped.
const imageVolumePod = `apiVersion: v1
kind: Pod
metadata:
  name: imgvol
  namespace: default
spec:
  os: {name: linux}
  restartPolicy: Always
  terminationGracePeriodSeconds: 10
  volumes:
  - name: kitten
    image: {reference: ` + kittenRef + `, pullPolicy: IfNotPresent}
  - name: single
    image: {reference: ` + singleRef + `, pullPolicy: IfNotPresent}
  containers:
  - name: reader
    image: busybox:e2e
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "cat /volume/data.json; echo; cat /sub/os-release /single/single.txt; echo; trap 'exit 0' TERM; sleep 3600 & wait"]
    volumeMounts:
    - {name: kitten, mountPath: /volume}
    - {name: kitten, mountPath: /sub, subPath: etc}
    - {name: single, mountPath: /single}
`

// The kubelet runs a static pod with image volumes over huskd: it pulls
// the volumes' images itself, the container reads their files (one
// through a subPath), each volume is mounted read-only, and
// ContainerStatus reports each mount with its image.
func TestKubeletImageVolume(t *testing.T) {
	binary := kubeletBinary(t)
	iptablesBefore := iptablesRules(t)
	_, registryConfig := serveVolumeImages(t)
	e := containerEnvWith(t, registryConfig)
	k := startKubelet(t, e, binary)
	start := time.Now()
	manifest := filepath.Join(k.manifests, "imgvol.yaml")
	if err := os.WriteFile(manifest, []byte(imageVolumePod), 0o644); err != nil {
		t.Fatal(err)
	}
	c := k.running("reader", 0, 3*time.Minute)
	up := time.Since(start)
	t.Logf("pod with image volumes up %s after the kubelet started", up.Round(time.Millisecond))
	for _, ref := range []string{kittenRef, singleRef} {
		if len(e.lines("method=PullImage", "image="+ref, "code=OK")) == 0 {
			t.Errorf("the kubelet did not pull %s through huskd", ref)
		}
	}

	st, err := e.rt.ContainerStatus(e.ctx(), &runtimeapi.ContainerStatusRequest{ContainerId: c.Id})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"image": "kitten.jpg"}` + "\n" + `NAME="Alpine Linux"` + "\none layer\n"
	if got := waitCRILog(st.Status.LogPath, want, 30*time.Second); got != want {
		t.Errorf("the container's log %s: %q, want %q", st.Status.LogPath, got, want)
	}
	assertImageMounts(t, e, st.Status.Mounts)
	assertReadOnlyInside(t, e, c.Id, "/volume", "/sub", "/single")

	if err := os.Remove(manifest); err != nil {
		t.Fatal(err)
	}
	if st := e.waitExited(c.Id, 60*time.Second); st.ExitCode != 0 {
		t.Errorf("the kubelet stopped the container with exit %d, want 0 (its SIGTERM trapped)", st.ExitCode)
	}
	waitState(t, e, c.PodSandboxId, runtimeapi.PodSandboxState_SANDBOX_NOTREADY, 60*time.Second)
	k.stopAndAssertClean(iptablesBefore)
	t.Logf("figures: pod up %s, whole test %s", up.Round(time.Millisecond), time.Since(start).Round(time.Second))
}

// waitCRILog waits until the stdout of a CRI log file (its full lines'
// text) is want, and returns what it last read.
func waitCRILog(path, want string, within time.Duration) string {
	var got string
	pollUntil(within, func() bool {
		b, _ := os.ReadFile(path)
		got = ""
		for _, l := range strings.Split(string(b), "\n") {
			// timestamp stream tag text
			if f := strings.SplitN(l, " ", 4); len(f) == 4 && f[1] == "stdout" && f[2] == "F" {
				got += f[3] + "\n"
			}
		}
		return got == want
	})
	return got
}

// assertImageMounts checks ContainerStatus's image mounts: each with the
// ID the kubelet pulled, the reference the pod named, read-only, and the
// subPath as image_sub_path.
func assertImageMounts(t *testing.T, e *env, mounts []*runtimeapi.Mount) {
	t.Helper()
	images := runtimeapi.NewImageServiceClient(e.conn)
	ids := map[string]string{}
	for _, ref := range []string{kittenRef, singleRef} {
		resp, err := images.ImageStatus(e.ctx(), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if err != nil || resp.Image == nil {
			t.Fatalf("ImageStatus %s: %v, %v", ref, resp, err)
		}
		ids[ref] = resp.Image.Id
	}
	want := map[string]struct{ ref, subPath string }{
		"/volume": {kittenRef, ""}, "/sub": {kittenRef, "etc"}, "/single": {singleRef, ""},
	}
	for _, m := range mounts {
		w, ok := want[m.ContainerPath]
		if !ok {
			continue
		}
		delete(want, m.ContainerPath)
		if m.GetImage().GetImage() != ids[w.ref] || m.GetImage().GetUserSpecifiedImage() != w.ref ||
			m.ImageSubPath != w.subPath || !m.Readonly || m.HostPath == "" {
			t.Errorf("status mount %s = %v, want image %s (%s), image_sub_path %q, read-only, its host mount",
				m.ContainerPath, m, ids[w.ref], w.ref, w.subPath)
		}
	}
	for path := range want {
		t.Errorf("ContainerStatus lacks the image mount at %s: %v", path, mounts)
	}
}

// assertReadOnlyInside checks, from inside the container, that each path
// is a read-only mount and refuses a write.
func assertReadOnlyInside(t *testing.T, e *env, id string, paths ...string) {
	t.Helper()
	mi := e.exec(id, 10, "cat", "/proc/self/mountinfo")
	options := map[string]string{}
	for _, l := range strings.Split(string(mi.Stdout), "\n") {
		if f := strings.Fields(l); len(f) > 5 {
			options[f[4]] = f[5]
		}
	}
	for _, p := range paths {
		if opts, ok := options[p]; !ok || !slices.Contains(strings.Split(opts, ","), "ro") {
			t.Errorf("%s in the container: mount options %q (mounted: %v), want ro", p, opts, ok)
		}
		if r := e.exec(id, 10, "sh", "-c", "touch "+p+"/x 2>/dev/null && echo writable || echo read-only"); string(r.Stdout) != "read-only\n" {
			t.Errorf("a write to %s in the container: %q (stderr %q)", p, r.Stdout, r.Stderr)
		}
	}
}
