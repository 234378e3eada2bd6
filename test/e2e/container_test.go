package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// busyboxApplets are linked to /bin/busybox in the test image.
var busyboxApplets = []string{"sh", "httpd", "wget", "cat", "echo", "sleep", "hostname", "ps", "head", "tr",
	"mkdir", "ls", "id", "true", "mv", "seq", "yes", "dd", "stty", "test", "nc", "stat", "touch"}

// busyboxImage builds a busybox image offline from the host's static
// busybox, with a passwd that knows an unprivileged "app" user.
func busyboxImage(t *testing.T) v1.Image {
	t.Helper()
	requireBusybox(t)
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, body []byte) {
		h.Size = int64(len(body))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"bin/", "etc/", "tmp/", "home/", "home/app/"} {
		add(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755}, nil)
	}
	add(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755}, bb)
	for _, a := range busyboxApplets {
		add(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox"}, nil)
	}
	add(&tar.Header{Name: "etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644},
		[]byte("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"))
	add(&tar.Header{Name: "etc/group", Typeflag: tar.TypeReg, Mode: 0o644},
		[]byte("root:x:0:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n"))
	tw.Close()
	layerBytes := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerBytes)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.Config(img, v1.Config{Cmd: []string{"sh"}, Env: []string{"PATH=/bin", "FROM_IMAGE=yes"}})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// containerEnv is an env with the busybox image pulled.
func containerEnv(t *testing.T) *env { return containerEnvWith(t) }

func containerEnvWith(t *testing.T, opts ...envOption) *env {
	t.Helper()
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	host := strings.TrimPrefix(reg.URL, "http://")
	ref, _ := name.NewTag(host+"/library/busybox:e2e", name.Insecure)
	img := busyboxImage(t)
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	// The same with a stop signal, as a Dockerfile's STOPSIGNAL sets it.
	cf, _ := img.ConfigFile()
	cf.Config.StopSignal = "SIGUSR1"
	stopImg, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	stopRef, _ := name.NewTag(host+"/library/busybox:stopsignal", name.Insecure)
	if err := remote.Write(stopRef, stopImg); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, append(opts, withConfig(fmt.Sprintf("[registries.\"*\"]\nendpoints = [\"http://%s\"]\nskip_upstream = true\n", host)))...)
	e.start()
	for _, ref := range []string{"busybox:e2e", "busybox:stopsignal"} {
		if _, err := runtimeapi.NewImageServiceClient(e.conn).PullImage(e.ctx(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
			t.Fatalf("PullImage %s: %v\n%s", ref, err, e.logs())
		}
	}
	return e
}

func ctrConfig(name string, cmd ...string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: "busybox:e2e"},
		Command:  cmd,
		LogPath:  name + "/0.log",
		Labels:   map[string]string{"container": name},
		Linux:    &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{}, SecurityContext: &runtimeapi.LinuxContainerSecurityContext{}},
	}
}

// run creates and starts a container.
func (e *env) run(podID string, pod *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) string {
	e.t.Helper()
	resp, err := e.rt.CreateContainer(e.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
	if err != nil {
		e.t.Fatalf("CreateContainer %s: %v\n%s", cfg.Metadata.Name, err, e.logs())
	}
	if _, err := e.rt.StartContainer(e.ctx(), &runtimeapi.StartContainerRequest{ContainerId: resp.ContainerId}); err != nil {
		e.t.Fatalf("StartContainer %s: %v\n%s", cfg.Metadata.Name, err, e.logs())
	}
	return resp.ContainerId
}

func (e *env) exec(id string, timeout int64, cmd ...string) *runtimeapi.ExecSyncResponse {
	e.t.Helper()
	resp, err := e.rt.ExecSync(e.ctx(), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: timeout})
	if err != nil {
		e.t.Fatalf("ExecSync %v: %v\n%s", cmd, err, e.logs())
	}
	return resp
}

// waitLog waits until the CRI log of a container (its log_path under the
// pod's log directory) holds want.
func waitLog(t *testing.T, pod *runtimeapi.PodSandboxConfig, logPath, want string) {
	t.Helper()
	path := filepath.Join(pod.LogDirectory, logPath)
	if !pollUntil(10*time.Second, func() bool { b, _ := os.ReadFile(path); return bytes.Contains(b, []byte(want)) }) {
		b, _ := os.ReadFile(path)
		t.Fatalf("%s lacks %q after 10s:\n%s", path, want, b)
	}
}

// waitExited waits for a container to exit and returns its status.
func (e *env) waitExited(id string, within time.Duration) *runtimeapi.ContainerStatus {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, err := e.rt.ContainerStatus(e.ctx(), &runtimeapi.ContainerStatusRequest{ContainerId: id})
		if err != nil {
			e.t.Fatalf("ContainerStatus: %v", err)
		}
		if resp.Status.State == runtimeapi.ContainerState_CONTAINER_EXITED {
			return resp.Status
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("container %s still %s after %s\n%s", id, resp.Status.State, within, e.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The documents' demo: a web container and a client sharing the pod's
// network, UTS, IPC and (pid = POD) PID namespaces, with husk-pause as
// PID 1 reaping the client's orphans. Run with runc and crun.
func TestPodDemo(t *testing.T) {
	for _, handler := range []string{"runc", "crun"} {
		t.Run(handler, func(t *testing.T) {
			t.Parallel()
			e := containerEnv(t)
			pod := e.podConfig("demo-" + handler)
			pod.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
			podID := e.runPod(pod, handler)

			web := e.run(podID, pod, ctrConfig("web", "sh", "-c",
				"mkdir -p /www && echo hello-from-web > /www/index.html && echo shared > /dev/shm/note && exec httpd -f -p 80 -h /www"))
			client := e.run(podID, pod, ctrConfig("client", "sleep", "3600"))

			var page string
			for i := 0; i < 50; i++ {
				if r := e.exec(client, 10, "wget", "-q", "-O", "-", "http://127.0.0.1:80/"); r.ExitCode == 0 {
					page = string(r.Stdout)
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if page != "hello-from-web\n" {
				t.Fatalf("client fetched %q from 127.0.0.1:80", page)
			}
			h1, h2 := e.exec(web, 10, "hostname"), e.exec(client, 10, "hostname")
			if string(h1.Stdout) != pod.Hostname+"\n" || string(h1.Stdout) != string(h2.Stdout) {
				t.Errorf("hostnames %q and %q, want %q", h1.Stdout, h2.Stdout, pod.Hostname)
			}
			if r := e.exec(client, 10, "cat", "/dev/shm/note"); string(r.Stdout) != "shared\n" {
				t.Errorf("/dev/shm/note in the client = %q (%s)", r.Stdout, r.Stderr)
			}
			if r := e.exec(client, 10, "cat", "/proc/1/cmdline"); !strings.Contains(string(r.Stdout), "husk-pause") {
				t.Errorf("PID 1 of the pod is %q, want husk-pause", r.Stdout)
			}
			if r := e.exec(client, 10, "ps", "-o", "pid,comm"); !strings.Contains(string(r.Stdout), "httpd") {
				t.Errorf("client does not see the web server's processes:\n%s", r.Stdout)
			}
			// An orphan: the inner sleep's parent exits at once, so it is
			// reparented to PID 1 and must be reaped when it exits.
			e.exec(client, 10, "sh", "-c", "sh -c 'sleep 0.3 &'")
			var ps []byte
			reaped := pollUntil(5*time.Second, func() bool {
				ps = e.exec(client, 10, "ps", "-o", "stat,args").Stdout
				return !bytes.Contains(ps, []byte("sleep 0.3")) && !bytes.Contains(ps, []byte("Z "))
			})
			if !reaped {
				t.Errorf("the orphan is still there, or a zombie, 5s on:\n%s", ps)
			}

			list, err := e.rt.ListContainers(e.ctx(), &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
				PodSandboxId: podID, LabelSelector: map[string]string{"container": "web"}}})
			if err != nil || len(list.Containers) != 1 || list.Containers[0].Id != web {
				t.Errorf("ListContainers by label = %v, %v", list, err)
			}
			e.stopRemove(podID)
			e.assertNoLeaks(podID, web, client)
		})
	}
}

// Exit codes and reasons, logs in the CRI format, log reopening, user
// resolution, ExecSync's timeout.
func TestContainerLifecycle(t *testing.T) {
	t.Parallel()
	e := containerEnv(t)
	pod := e.podConfig("life")
	podID := e.runPod(pod, "")

	ok := e.run(podID, pod, ctrConfig("ok", "sh", "-c", "echo out; echo err >&2; head -c 20000 /dev/zero | tr '\\0' a; echo; printf tail"))
	fail := e.run(podID, pod, ctrConfig("fail", "sh", "-c", "exit 3"))
	if st := e.waitExited(ok, 10*time.Second); st.ExitCode != 0 || st.Reason != "Completed" || st.FinishedAt < st.StartedAt {
		t.Errorf("ok: exit %d reason %q", st.ExitCode, st.Reason)
	}
	if st := e.waitExited(fail, 10*time.Second); st.ExitCode != 3 || st.Reason != "Error" {
		t.Errorf("fail: exit %d reason %q", st.ExitCode, st.Reason)
	}

	// The log: stdout and stderr records, the 20000-byte line split in a
	// 16 KiB partial and its full rest, the unterminated tail partial.
	logPath := filepath.Join(pod.LogDirectory, "ok/0.log")
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		f := strings.SplitN(line, " ", 4)
		if len(f) != 4 {
			t.Fatalf("bad log line %q", line)
		}
		if _, err := time.Parse(time.RFC3339Nano, f[0]); err != nil {
			t.Errorf("bad timestamp in %q", line)
		}
		content := f[3]
		if len(content) > 40 {
			content = fmt.Sprintf("a*%d", len(content))
		}
		got = append(got, f[1]+" "+f[2]+" "+content)
	}
	sortStreams := strings.Join(got, "|")
	for _, want := range []string{"stdout F out", "stderr F err", "stdout P a*16384", "stdout F a*3616", "stdout P tail"} {
		if !strings.Contains(sortStreams, want) {
			t.Errorf("log lacks %q: %v", want, got)
		}
	}

	// 137 after a kill, and the user from run_as_username.
	cfg := ctrConfig("sleeper", "sleep", "3600")
	cfg.Linux.SecurityContext.RunAsUsername = "app"
	sleeper := e.run(podID, pod, cfg)
	if r := e.exec(sleeper, 10, "id"); !strings.Contains(string(r.Stdout), "uid=1000(app) gid=1000(app) groups=1000(app),2000(extra)") {
		t.Errorf("id as app = %q", r.Stdout)
	}
	start := time.Now()
	_, err = e.rt.ExecSync(e.ctx(), &runtimeapi.ExecSyncRequest{ContainerId: sleeper, Cmd: []string{"sleep", "30"}, Timeout: 1})
	if status.Code(err) != codes.DeadlineExceeded || time.Since(start) > 5*time.Second {
		t.Errorf("ExecSync past its timeout = %v after %s, want DeadlineExceeded after ~1s", err, time.Since(start))
	}
	if r := e.exec(sleeper, 10, "ps", "-o", "comm"); strings.Count(string(r.Stdout), "sleep") != 1 {
		t.Errorf("the timed-out exec still runs:\n%s", r.Stdout)
	}
	if _, err := e.rt.StopContainer(e.ctx(), &runtimeapi.StopContainerRequest{ContainerId: sleeper, Timeout: 0}); err != nil {
		t.Fatal(err)
	}
	if st := e.waitExited(sleeper, 5*time.Second); st.ExitCode != 137 {
		t.Errorf("killed: exit %d", st.ExitCode)
	}

	// OOMKilled: a 16 MiB limit and a shell that keeps doubling a string.
	cfg = ctrConfig("oom", "sh", "-c", "x=aaaaaaaa; while true; do x=$x$x; done")
	cfg.Linux.Resources.MemoryLimitInBytes = 16 << 20
	oom := e.run(podID, pod, cfg)
	if st := e.waitExited(oom, 30*time.Second); st.Reason != "OOMKilled" || st.ExitCode != 137 {
		t.Errorf("oom: exit %d reason %q", st.ExitCode, st.Reason)
	}

	// ReopenContainerLog after the kubelet renamed the file.
	ticker := e.run(podID, pod, ctrConfig("ticker", "sh", "-c", "i=0; while true; do i=$((i+1)); echo tick$i; sleep 0.05; done"))
	tickLog := filepath.Join(pod.LogDirectory, "ticker/0.log")
	if !pollUntil(10*time.Second, func() bool { return countLines(tickLog) > 0 }) {
		t.Fatal("no lines in the ticker's log after 10s")
	}
	if err := os.Rename(tickLog, tickLog+".1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt.ReopenContainerLog(e.ctx(), &runtimeapi.ReopenContainerLogRequest{ContainerId: ticker}); err != nil {
		t.Fatal(err)
	}
	if !pollUntil(10*time.Second, func() bool { return countLines(tickLog) > 0 }) {
		t.Error("no lines in the reopened log after 10s")
	}
	if n := countLines(tickLog + ".1"); n == 0 {
		t.Error("no lines in the rotated log")
	}

	// Idempotence, and the CRI's success for unknown IDs.
	for i := 0; i < 2; i++ {
		if _, err := e.rt.StopContainer(e.ctx(), &runtimeapi.StopContainerRequest{ContainerId: ok, Timeout: 1}); err != nil {
			t.Errorf("StopContainer of an exited container: %v", err)
		}
		if _, err := e.rt.RemoveContainer(e.ctx(), &runtimeapi.RemoveContainerRequest{ContainerId: ok}); err != nil {
			t.Errorf("RemoveContainer #%d: %v", i, err)
		}
	}
	if _, err := e.rt.StopContainer(e.ctx(), &runtimeapi.StopContainerRequest{ContainerId: "nosuch"}); err != nil {
		t.Errorf("StopContainer of an unknown ID: %v", err)
	}
	// RemoveContainer of a running container kills it.
	if _, err := e.rt.RemoveContainer(e.ctx(), &runtimeapi.RemoveContainerRequest{ContainerId: ticker}); err != nil {
		t.Errorf("RemoveContainer of a running container: %v", err)
	}
	e.stopRemove(podID)
	e.assertNoLeaks(podID)
}

// countLines counts the lines of a file; 0 when there is none.
func countLines(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
	}
	return n
}

// kill -9 of huskd while containers run and while one exits: after the
// restart the running one is still RUNNING and stoppable, the one that
// exited while huskd was down is EXITED with its real code.
func TestContainersSurviveDaemonRestart(t *testing.T) {
	t.Parallel()
	e := containerEnv(t)
	pod := e.podConfig("restart")
	podID := e.runPod(pod, "")
	runner := e.run(podID, pod, ctrConfig("runner", "sleep", "3600"))
	// The quitter exits once the test opens its gate, while huskd is down.
	gate := filepath.Join(e.dir, "gate")
	if err := os.MkdirAll(gate, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := ctrConfig("quitter", "sh", "-c", "while [ ! -e /gate/open ]; do sleep 0.05; done; exit 7")
	cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/gate", HostPath: gate}}
	quitter := e.run(podID, pod, cfg)
	pid := e.containerPID(quitter)
	e.kill9()
	if err := os.WriteFile(filepath.Join(gate, "open"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if !pollUntil(10*time.Second, func() bool { return !alive(pid) }) {
		t.Fatalf("quitter %d still runs 10s after its gate opened", pid)
	}
	e.start()
	if st := e.waitExited(quitter, 5*time.Second); st.ExitCode != 7 {
		t.Errorf("exited while huskd was down: code %d, want 7", st.ExitCode)
	}
	resp, err := e.rt.ContainerStatus(e.ctx(), &runtimeapi.ContainerStatusRequest{ContainerId: runner})
	if err != nil || resp.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("runner after restart: %v, %v", resp, err)
	}
	if r := e.exec(runner, 10, "echo", "alive"); string(r.Stdout) != "alive\n" {
		t.Errorf("exec after restart = %q", r.Stdout)
	}
	if _, err := e.rt.StopContainer(e.ctx(), &runtimeapi.StopContainerRequest{ContainerId: runner, Timeout: 1}); err != nil {
		t.Fatal(err)
	}
	if st := e.waitExited(runner, 5*time.Second); st.ExitCode != 137 && st.ExitCode != 143 {
		t.Errorf("runner stopped: code %d", st.ExitCode)
	}
	e.stopRemove(podID)
	e.assertNoLeaks(podID)
}

// Bad container configs get InvalidArgument naming the field; a container
// in an unknown sandbox NotFound.
func TestContainerBadInput(t *testing.T) {
	t.Parallel()
	e := containerEnv(t)
	pod := e.podConfig("bad")
	podID := e.runPod(pod, "")
	bad := map[string]func(*runtimeapi.ContainerConfig){
		"metadata.name": func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = "../x" },
		"log_path":      func(c *runtimeapi.ContainerConfig) { c.LogPath = "../../etc/evil" },
		"image.image":   func(c *runtimeapi.ContainerConfig) { c.Image.Image = "" },
		"container_path": func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "rel", HostPath: "/tmp"}}
		},
	}
	for field, mutate := range bad {
		cfg := ctrConfig("c", "true")
		mutate(cfg)
		_, err := e.rt.CreateContainer(e.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: %v", field, err)
		}
	}
	_, err := e.rt.CreateContainer(e.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: "nosuch", Config: ctrConfig("c", "true")})
	if status.Code(err) != codes.NotFound {
		t.Errorf("unknown sandbox: %v", err)
	}
	cfg := ctrConfig("c", "true")
	cfg.Image.Image = "nosuch:1"
	if _, err := e.rt.CreateContainer(e.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg}); status.Code(err) != codes.NotFound {
		t.Errorf("unknown image: %v", err)
	}
	// A command that does not exist fails CreateContainer or
	// StartContainer with the runtime's reason, and leaves nothing.
	cfg = ctrConfig("missing", "/no/such/binary")
	cfg.Linux.SecurityContext.RunAsUser = &runtimeapi.Int64Value{Value: 0}
	resp, err := e.rt.CreateContainer(e.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg})
	if err == nil {
		_, err = e.rt.StartContainer(e.ctx(), &runtimeapi.StartContainerRequest{ContainerId: resp.ContainerId})
	}
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "no such file") {
		t.Errorf("missing binary: %v", err)
	}
	e.stopRemove(podID)
	e.assertNoLeaks(podID)
}

// GetContainerEvents streams sandbox and container events; the stats RPCs
// read the containers' cgroups and the pod's interfaces.
func TestEventsAndStats(t *testing.T) {
	t.Parallel()
	e := containerEnv(t)
	stream, err := e.rt.GetContainerEvents(e.ctx(), &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan *runtimeapi.ContainerEventResponse, 100)
	go func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				close(events)
				return
			}
			events <- ev
		}
	}()
	pod := e.podConfig("stats")
	podID := e.runPod(pod, "")
	ctr := e.run(podID, pod, ctrConfig("busy", "sh", "-c", "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; sleep 3600"))

	// The counters move as the container runs: poll until they have.
	var cs *runtimeapi.ContainerStatsResponse
	counted := pollUntil(10*time.Second, func() bool {
		cs, err = e.rt.ContainerStats(e.ctx(), &runtimeapi.ContainerStatsRequest{ContainerId: ctr})
		return err == nil && cs.Stats.Cpu.GetUsageCoreNanoSeconds().GetValue() > 0 && cs.Stats.Memory.GetWorkingSetBytes().GetValue() > 0
	})
	if !counted || cs.Stats.WritableLayer == nil {
		t.Errorf("ContainerStats = %v, %v", cs, err)
	}
	ps, err := e.rt.PodSandboxStats(e.ctx(), &runtimeapi.PodSandboxStatsRequest{PodSandboxId: podID})
	if err != nil || ps.Stats.Linux.GetProcess().GetProcessCount().GetValue() < 2 || len(ps.Stats.Linux.Containers) != 1 ||
		ps.Stats.Linux.GetNetwork().GetDefaultInterface().GetName() != "eth0" {
		t.Errorf("PodSandboxStats = %v, %v", ps, err)
	}
	if l, err := e.rt.ListContainerStats(e.ctx(), &runtimeapi.ListContainerStatsRequest{Filter: &runtimeapi.ContainerStatsFilter{PodSandboxId: podID}}); err != nil || len(l.Stats) != 1 {
		t.Errorf("ListContainerStats = %v, %v", l, err)
	}
	if l, err := e.rt.ListPodSandboxStats(e.ctx(), &runtimeapi.ListPodSandboxStatsRequest{}); err != nil || len(l.Stats) != 1 {
		t.Errorf("ListPodSandboxStats = %v, %v", l, err)
	}
	e.stopRemove(podID)

	want := []string{
		podID + " CONTAINER_CREATED_EVENT", podID + " CONTAINER_STARTED_EVENT",
		ctr + " CONTAINER_CREATED_EVENT", ctr + " CONTAINER_STARTED_EVENT", ctr + " CONTAINER_STOPPED_EVENT",
		podID + " CONTAINER_STOPPED_EVENT", ctr + " CONTAINER_DELETED_EVENT", podID + " CONTAINER_DELETED_EVENT",
	}
	var got []string
	timeout := time.After(5 * time.Second)
	for len(got) < len(want) {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("event stream ended after %v", got)
			}
			got = append(got, ev.ContainerId+" "+ev.ContainerEventType.String())
		case <-timeout:
			t.Fatalf("events = %v, want %v", got, want)
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	e.assertNoLeaks(podID, ctr)
}

// What the container config asks for reaches the container: read-only
// rootfs, bind mounts (read-only and read-write), devices, env and working
// dir, CPU and memory limits and their update, a terminal, the image's
// stop signal, the ExecSync output cap, verbose status.
func TestContainerConfig(t *testing.T) {
	t.Parallel()
	e := containerEnv(t)
	pod := e.podConfig("cfg")
	podID := e.runPod(pod, "")
	hostDir := filepath.Join(e.dir, "vol")
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hostDir, "f"), []byte("from-host"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := ctrConfig("cfg", "sleep", "3600")
	cfg.WorkingDir = "/tmp"
	cfg.Envs = []*runtimeapi.KeyValue{{Key: "GREETING", Value: []byte("hi")}, {Key: "FROM_IMAGE", Value: []byte("overridden")}}
	cfg.Mounts = []*runtimeapi.Mount{
		{ContainerPath: "/ro", HostPath: hostDir, Readonly: true},
		{ContainerPath: "/rw", HostPath: hostDir},
		{ContainerPath: "/made", HostPath: filepath.Join(e.dir, "made-by-husk")},
	}
	cfg.Devices = []*runtimeapi.Device{{HostPath: "/dev/null", ContainerPath: "/dev/mynull", Permissions: "rwm"}}
	cfg.Linux.SecurityContext.ReadonlyRootfs = true
	cfg.Linux.Resources.CpuShares = 256
	cfg.Linux.Resources.MemoryLimitInBytes = 64 << 20
	id := e.run(podID, pod, cfg)

	checks := []struct {
		cmd  string
		want string
	}{
		{"pwd", "/tmp\n"},
		{"echo $GREETING $FROM_IMAGE", "hi overridden\n"},
		{"cat /ro/f", "from-host"},
		{"touch /ro/x 2>/dev/null && echo writable || echo read-only", "read-only\n"},
		{"echo written > /rw/new && cat /rw/new", "written\n"},
		{"touch /rootfile 2>/dev/null && echo writable || echo read-only", "read-only\n"},
		{"echo ok > /dev/mynull && echo device", "device\n"},
		{"test -d /made && echo made", "made\n"},
		{"cat /etc/resolv.conf | head -1", "search e2e.svc.cluster.local\n"},
	}
	for _, c := range checks {
		if r := e.exec(id, 10, "sh", "-c", c.cmd); string(r.Stdout) != c.want {
			t.Errorf("%s: %q (stderr %q), want %q", c.cmd, r.Stdout, r.Stderr, c.want)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(hostDir, "new")); string(b) != "written\n" {
		t.Errorf("write through the rw mount did not reach the host: %q", b)
	}

	st, err := e.rt.ContainerStatus(e.ctx(), &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	info := st.Info["info"]
	if !strings.Contains(info, `"pid":`) || !strings.Contains(info, `"runtimeSpec"`) || len(st.Status.Mounts) != 3 ||
		st.Status.LogPath != filepath.Join(pod.LogDirectory, "cfg/0.log") || st.Status.Resources.GetLinux().GetMemoryLimitInBytes() != 64<<20 {
		t.Errorf("ContainerStatus = %v\ninfo %s", st.Status, info)
	}
	cgroup := func(file string) string {
		var spec struct {
			Linux struct {
				CgroupsPath string `json:"cgroupsPath"`
			} `json:"linux"`
		}
		var v struct {
			Spec json.RawMessage `json:"runtimeSpec"`
		}
		_ = json.Unmarshal([]byte(info), &v)
		_ = json.Unmarshal(v.Spec, &spec)
		for _, p := range []string{"/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup"} {
			if b, err := os.ReadFile(filepath.Join(p, spec.Linux.CgroupsPath, file)); err == nil {
				return strings.TrimSpace(string(b))
			}
		}
		return ""
	}
	if got := cgroup("cpu.shares"); got != "256" && cgroup("cpu.weight") == "" {
		t.Errorf("cpu.shares = %q", got)
	}
	if got := cgroup("memory.limit_in_bytes"); got != fmt.Sprint(64<<20) && cgroup("memory.max") != fmt.Sprint(64<<20) {
		t.Errorf("memory limit = %q", got)
	}
	if _, err := e.rt.UpdateContainerResources(e.ctx(), &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id,
		Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 128 << 20}}); err != nil {
		t.Fatalf("UpdateContainerResources: %v", err)
	}
	if got := cgroup("memory.limit_in_bytes"); got != fmt.Sprint(128<<20) && cgroup("memory.max") != fmt.Sprint(128<<20) {
		t.Errorf("memory limit after update = %q", got)
	}
	if st, _ := e.rt.ContainerStatus(e.ctx(), &runtimeapi.ContainerStatusRequest{ContainerId: id}); st.GetStatus().GetResources().GetLinux().GetMemoryLimitInBytes() != 128<<20 ||
		st.GetStatus().GetResources().GetLinux().GetCpuShares() != 256 {
		t.Errorf("resources after update = %v", st.GetStatus().GetResources())
	}

	// ExecSync output past 16 MiB is an error, not a truncated success.
	_, err = e.rt.ExecSync(e.ctx(), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", "head -c 17000000 /dev/zero"}, Timeout: 30})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "16 MiB") {
		t.Errorf("ExecSync of 17 MB = %v", err)
	}

	// A terminal: the output goes to the log as stdout.
	tty := ctrConfig("tty", "sh", "-c", "test -t 1 && echo on-a-tty")
	tty.Tty = true
	ttyID := e.run(podID, pod, tty)
	if st := e.waitExited(ttyID, 10*time.Second); st.ExitCode != 0 {
		t.Errorf("tty container exit %d", st.ExitCode)
	}
	if b, _ := os.ReadFile(filepath.Join(pod.LogDirectory, "tty/0.log")); !strings.Contains(string(b), " stdout F on-a-tty") {
		t.Errorf("tty log = %q", b)
	}

	// kubectl debug --target: a container in the PID namespace of another.
	target := ctrConfig("target", "sleep", "3600")
	target.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER}
	targetID := e.run(podID, pod, target)
	dbg := ctrConfig("debug", "sleep", "3601")
	dbg.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET, TargetId: targetID}
	dbgID := e.run(podID, pod, dbg)
	if r := e.exec(dbgID, 10, "cat", "/proc/1/cmdline"); string(r.Stdout) != "sleep\x003600\x00" {
		t.Errorf("PID 1 seen by a pid=TARGET container = %q, want the target's sleep 3600", r.Stdout)
	}
	bad := ctrConfig("debug2", "true")
	bad.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET, TargetId: "nosuch"}
	if _, err := e.rt.CreateContainer(e.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: bad}); status.Code(err) != codes.NotFound {
		t.Errorf("pid=TARGET of an unknown container: %v", err)
	}

	// The image's stop signal, trapped: the container exits with 42 long
	// before the timeout.
	sig := ctrConfig("stopsig", "sh", "-c", "trap 'exit 42' USR1; echo trap-set; while true; do sleep 0.1; done")
	sig.Image.Image = "busybox:stopsignal"
	sigID := e.run(podID, pod, sig)
	waitLog(t, pod, sig.LogPath, "trap-set")
	start := time.Now()
	if _, err := e.rt.StopContainer(e.ctx(), &runtimeapi.StopContainerRequest{ContainerId: sigID, Timeout: 20}); err != nil {
		t.Fatal(err)
	}
	if st := e.waitExited(sigID, time.Second); st.ExitCode != 42 || time.Since(start) > 5*time.Second {
		t.Errorf("stop with the image's SIGUSR1: exit %d after %s", st.ExitCode, time.Since(start))
	}
	e.stopRemove(podID)
	e.assertNoLeaks(podID)
}

// A pod with its own user namespace: its root is a host ID of the
// mapping, and the image's files, seen through idmapped layers, belong to
// it; what it writes lands in the host as the mapped ID.
func TestUserNamespacePod(t *testing.T) {
	t.Parallel()
	e := containerEnv(t)
	for _, handler := range []string{"runc", "crun"} {
		t.Run(handler, func(t *testing.T) {
			pod := e.podConfig("userns-" + handler)
			mapping := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 200000, Length: 65536}}
			pod.Linux.SecurityContext.NamespaceOptions.UsernsOptions = &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: mapping, Gids: mapping}
			podID := e.runPod(pod, handler)
			vol := filepath.Join(e.dir, "vol-"+handler)
			if err := os.MkdirAll(vol, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(vol, "f"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg := ctrConfig("u", "sleep", "3600")
			cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/vol", HostPath: vol, UidMappings: mapping, GidMappings: mapping}}
			id := e.run(podID, pod, cfg)
			checks := []struct{ cmd, want string }{
				{"cat /proc/self/uid_map | tr -s ' '", " 0 200000 65536\n"},
				{"id -u; stat -c %u /bin/busybox", "0\n0\n"},
				{"touch /written && stat -c %u /written", "0\n"},
				{"stat -c %u /vol/f && touch /vol/new && echo wrote", "0\nwrote\n"},
			}
			for _, c := range checks {
				if r := e.exec(id, 10, "sh", "-c", c.cmd); string(r.Stdout) != c.want {
					t.Errorf("%s: %q (stderr %q), want %q", c.cmd, r.Stdout, r.Stderr, c.want)
				}
			}
			var st unix.Stat_t
			if err := unix.Stat(filepath.Join(vol, "new"), &st); err != nil || st.Uid != 0 {
				t.Errorf("file the pod's root wrote in the volume: uid %d, %v; want the host's 0 through the idmapped mount", st.Uid, err)
			}
			_, info := e.status(podID)
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", info.PID)); !strings.Contains(strings.Join(strings.Fields(string(b)), " "), "0 200000 65536") {
				t.Errorf("infra's uid_map = %q", b)
			}
			e.stopRemove(podID)
			e.assertNoLeaks(podID, id)
		})
	}
	// Mappings the CRI does not allow are refused at RunPodSandbox.
	bad := map[string]*runtimeapi.UserNamespace{
		"two mappings": {Mode: runtimeapi.NamespaceMode_POD,
			Uids: []*runtimeapi.IDMapping{{HostId: 200000, Length: 1000}, {ContainerId: 1000, HostId: 300000, Length: 1000}},
			Gids: []*runtimeapi.IDMapping{{HostId: 200000, Length: 65536}}},
		"root unmapped": {Mode: runtimeapi.NamespaceMode_POD,
			Uids: []*runtimeapi.IDMapping{{ContainerId: 1, HostId: 200000, Length: 65536}},
			Gids: []*runtimeapi.IDMapping{{ContainerId: 1, HostId: 200000, Length: 65536}}},
		"container mode": {Mode: runtimeapi.NamespaceMode_CONTAINER},
	}
	for name, u := range bad {
		pod := e.podConfig("bad-userns")
		pod.Linux.SecurityContext.NamespaceOptions.UsernsOptions = u
		if _, err := e.rt.RunPodSandbox(e.ctx(), &runtimeapi.RunPodSandboxRequest{Config: pod}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	e.assertNoLeaks()
}

// recursive_read_only: a submount of the volume is read-only too, with
// runc (its "rro") and crun (a view huskd stages).
func TestRecursiveReadOnlyMounts(t *testing.T) {
	t.Parallel()
	e := containerEnv(t)
	vol := filepath.Join(e.dir, "rro")
	sub := filepath.Join(vol, "sub")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", sub, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(sub, unix.MNT_DETACH) })
	for _, handler := range []string{"runc", "crun"} {
		t.Run(handler, func(t *testing.T) {
			pod := e.podConfig("rro-" + handler)
			podID := e.runPod(pod, handler)
			for _, rro := range []bool{false, true} {
				cfg := ctrConfig(fmt.Sprintf("c-%v", rro), "sleep", "3600")
				cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/vol", HostPath: vol, Readonly: true, RecursiveReadOnly: rro}}
				id := e.run(podID, pod, cfg)
				want := "writable\n"
				if rro {
					want = "read-only\n"
				}
				if r := e.exec(id, 10, "sh", "-c", "touch /vol/sub/x 2>/dev/null && echo writable || echo read-only"); string(r.Stdout) != want {
					t.Errorf("recursive_read_only=%v: submount is %q, want %q", rro, r.Stdout, want)
				}
			}
			e.stopRemove(podID)
		})
	}
	_ = unix.Unmount(sub, unix.MNT_DETACH) // the test's own submount
	e.assertNoLeaks()
}

// The kubelet creates a container from the image ID it pulled and passes
// the pod's image as user_specified_image; ContainerStatus and
// ListContainers name the image's tag, which the kubelet shows as the pod
// status' image (node conformance's image-update specs wait for it).
func TestContainerStatusNamesImageTag(t *testing.T) {
	t.Parallel()
	e := containerEnv(t)
	img, err := runtimeapi.NewImageServiceClient(e.conn).ImageStatus(e.ctx(), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "busybox:e2e"}})
	if err != nil || img.GetImage() == nil {
		t.Fatalf("ImageStatus busybox:e2e: %v %v", img, err)
	}
	imageID := img.GetImage().GetId()
	pod := e.podConfig("imgname")
	podID := e.runPod(pod, "")
	cfg := ctrConfig("byid", "sleep", "3600")
	cfg.Image = &runtimeapi.ImageSpec{Image: imageID, UserSpecifiedImage: "busybox:e2e"}
	id := e.run(podID, pod, cfg)
	const want = "docker.io/library/busybox:e2e"
	st, err := e.rt.ContainerStatus(e.ctx(), &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		t.Fatal(err)
	}
	if got := st.GetStatus().GetImage(); got.GetImage() != want || got.GetUserSpecifiedImage() != "busybox:e2e" || st.GetStatus().GetImageRef() != imageID {
		t.Errorf("status image %v, image_ref %q; want %s, busybox:e2e, %s", got, st.GetStatus().GetImageRef(), want, imageID)
	}
	list, err := e.rt.ListContainers(e.ctx(), &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{Id: id}})
	if err != nil || len(list.GetContainers()) != 1 || list.GetContainers()[0].GetImage().GetImage() != want {
		t.Errorf("ListContainers %v: %v, want image %s", list, err, want)
	}
	e.stopRemove(podID)
	e.assertNoLeaks(podID, id)
}

// A Guaranteed pod's container asks for oom_score_adj -997. Where huskd
// may not lower a child's below its own (no CAP_SYS_RESOURCE), the
// container still starts, with huskd's value, as with containerd's
// restrict_oom_score_adj; where it may, with -997. Both handlers.
func TestContainerOOMScoreAdj(t *testing.T) {
	t.Parallel()
	e := containerEnv(t)
	want := -997
	pid := e.daemon.Process.Pid
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	own, _ := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid))
	var capEff uint64
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			capEff, _ = strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	if n, err := strconv.Atoi(strings.TrimSpace(string(own))); err == nil && capEff&(1<<unix.CAP_SYS_RESOURCE) == 0 && n > want {
		want = n
	}
	for _, handler := range []string{"runc", "crun"} {
		pod := e.podConfig("oom-" + handler)
		podID := e.runPod(pod, handler)
		cfg := ctrConfig("guaranteed", "sleep", "3600")
		cfg.Linux.Resources.OomScoreAdj = -997
		id := e.run(podID, pod, cfg)
		if r := e.exec(id, 10, "cat", "/proc/1/oom_score_adj"); strings.TrimSpace(string(r.Stdout)) != strconv.Itoa(want) {
			t.Errorf("%s: oom_score_adj %q (stderr %q), want %d", handler, r.Stdout, r.Stderr, want)
		}
		e.stopRemove(podID)
		e.assertNoLeaks(podID, id)
	}
}
