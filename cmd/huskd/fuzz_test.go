package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/config"
	"github.com/huskrt/husk/internal/testutil"
)

// FuzzCRI sends sequences of random, well-typed requests for every RPC
// of the RuntimeService and the ImageService (generated from their
// protobuf descriptors, fields drawn from the fuzz input, IDs often those
// of objects made earlier in the sequence) to the CRI gRPC server of
// huskd's own parts, built in this process as cmd/huskd builds them,
// against a temporary root, with real runc, CNI plugins and a local
// registry. After each sequence:
//   - the process has not panicked (a handler's panic ends the process);
//   - every pod and container the sequence made can be stopped and
//     removed, and the leak check of the node dir finds nothing;
//   - nothing was written outside huskd's dirs: the dirs above the node
//     dir (which a ".." in a name or path would reach first) hold only
//     what they held, and no file named with the canary the path tokens
//     carry exists in /, /tmp, /etc, /run, /var/lib, /var/log, the cgroup
//     hierarchies, or anywhere in the node once its pods are removed.
//
// Needs root. Run long with `make fuzz FUZZTIME=10m`.
func FuzzCRI(f *testing.F) {
	testutil.RequiresRoot(f, "pods: namespaces, mounts, cgroups")
	testutil.RequiresCommand(f, "runc")
	testutil.RequiresFile(f, "/bin/busybox", "busybox-static")
	if _, err := invoke.FindInPath("bridge", cniBinDirs); err != nil {
		testutil.Missing(f, "needs the bridge CNI plugin (containernetworking-plugins): %v", err)
	}
	cleanStaleFuzzDirs(f)
	h := newFuzzHusk(f)
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h.run(t, data)
	})
}

// fuzzHusk is huskd's parts serving the CRI on a socket in a dir of
// their own: /tmp/hfz-<pid>/a/b/c/n. a, b and c are guard levels: a ".."
// that escapes n lands in one of them first, where nothing else writes.
type fuzzHusk struct {
	top, node string
	bridge    string
	cgroup    string
	conn      *grpc.ClientConn
	rt        runtimeapi.RuntimeServiceClient
	images    runtimeapi.ImageServiceClient
	imageID   string
	// guard is what each guard level and the node dir must hold.
	guard map[string][]string
	gen   *generator
	// logFile, when HUSK_FUZZ_LOG names one, gets every Unknown and
	// Internal answer (errors nobody classified) and every call that took
	// more than 5 s, with its request.
	logFile *os.File
	// mu makes the sequences of one process run one at a time: the checks
	// look at the whole node.
	mu sync.Mutex
}

const fuzzBusybox = "busybox:fuzz"

var cniBinDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}

// trace logs every call and its answer (HUSK_FUZZ_TRACE=1, with -v).
var trace = os.Getenv("HUSK_FUZZ_TRACE") != ""

func newFuzzHusk(f *testing.F) *fuzzHusk {
	bin := fuzzBinaries(f)
	top := fmt.Sprintf("/tmp/hfz-%d", os.Getpid())
	h := &fuzzHusk{top: top, node: filepath.Join(top, "a", "b", "c", "n"), bridge: fmt.Sprintf("hfz%x", os.Getpid()),
		cgroup: fmt.Sprintf("/husk-fuzz-%d", os.Getpid())}
	h.makeDirs(f)
	f.Cleanup(h.cleanup)
	h.serve(f, h.config(f, bin, fuzzRegistry(f)))
	pulled, err := h.images.PullImage(context.Background(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: fuzzBusybox}})
	if err != nil {
		f.Fatalf("pull %s: %v", fuzzBusybox, err)
	}
	h.imageID = pulled.ImageRef
	// Runs before the cleanups above: the pods go through huskd while it
	// serves.
	f.Cleanup(func() {
		if bad := h.removeAll(); len(bad) > 0 {
			fmt.Fprintf(os.Stderr, "FuzzCRI: at cleanup: %s\n", strings.Join(bad, "; "))
		}
	})
	h.guard = map[string][]string{
		top:                         {"a", "owner"},
		filepath.Join(top, "a"):     {"b"},
		filepath.Join(top, "a/b"):   {"c"},
		filepath.Join(top, "a/b/c"): {"n"},
		h.node:                      h.nodeEntries(f),
	}
	h.gen = newGenerator(h.node, h.cgroup)
	if p := os.Getenv("HUSK_FUZZ_LOG"); p != "" {
		if h.logFile, err = os.OpenFile(p, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err != nil {
			f.Fatal(err)
		}
	}
	return h
}

// makeDirs makes the node's dirs (traversable, as a node's /var/lib is,
// for pods with a user namespace) and the owner file cleanStaleFuzzDirs
// reads.
func (h *fuzzHusk) makeDirs(f *testing.F) {
	for _, d := range []string{"root", "state", "logs", "host/dir", "net.d", "ipam"} {
		if err := os.MkdirAll(filepath.Join(h.node, d), 0o711); err != nil {
			f.Fatal(err)
		}
	}
	for _, p := range []string{h.top, filepath.Join(h.top, "a", "b", "c")} {
		if err := os.Chmod(p, 0o711); err != nil {
			f.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(h.node, "host", "file"), []byte("host file\n"), 0o644); err != nil {
		f.Fatal(err)
	}
	owner := fmt.Sprintf("%d %s %s", os.Getpid(), h.bridge, h.cgroup)
	if err := os.WriteFile(filepath.Join(h.top, "owner"), []byte(owner), 0o644); err != nil {
		f.Fatal(err)
	}
}

// fuzzBinaries are husk-pause and husk-monitor: from HUSK_BIN (make test
// sets it), else built. husk-monitor is found on PATH, as on a node where
// huskd is not beside it.
func fuzzBinaries(f *testing.F) string {
	bin := os.Getenv("HUSK_BIN")
	if bin == "" {
		bin = f.TempDir()
		for _, b := range []string{"husk-pause", "husk-monitor"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(bin, b), "./cmd/"+b)
			cmd.Dir = "../.."
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				f.Fatalf("build %s: %v\n%s", b, err, out)
			}
		}
	}
	if err := os.Setenv("PATH", bin+":"+os.Getenv("PATH")); err != nil {
		f.Fatal(err)
	}
	return bin
}

// fuzzRegistry serves busybox:fuzz, the host's static busybox as an image,
// on 127.0.0.1: every registry's mirror, so no pull leaves the machine.
func fuzzRegistry(f *testing.F) string {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	f.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	img, err := busyboxImage()
	if err != nil {
		f.Fatalf("busybox image: %v", err)
	}
	for _, tag := range []string{"busybox:fuzz", "busybox:other"} {
		ref, _ := name.NewTag(host+"/library/"+tag, name.Insecure)
		if err := remote.Write(ref, img); err != nil {
			f.Fatal(err)
		}
	}
	return host
}

// config is huskd's config for the fuzz node: a bridge of its own without
// masquerade or portmap (no iptables rule to leave if a worker is killed),
// every registry through the local one.
func (h *fuzzHusk) config(f *testing.F, bin, registryHost string) *config.Config {
	net := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "%s", "plugins": [{"type": "bridge", "bridge": %q, "isGateway": true,
 "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": "10.201.%d.0/24"}]]}}]}`,
		h.bridge, h.bridge, filepath.Join(h.node, "ipam"), os.Getpid()%250)
	if err := os.WriteFile(filepath.Join(h.node, "net.d", "10-fuzz.conflist"), []byte(net), 0o644); err != nil {
		f.Fatal(err)
	}
	cfg := config.Default()
	cfg.Root, cfg.State = filepath.Join(h.node, "root"), filepath.Join(h.node, "state")
	cfg.Listen = filepath.Join(h.node, "state", "husk.sock")
	cfg.PauseBinary = filepath.Join(bin, "husk-pause")
	cfg.CgroupParent = h.cgroup
	cfg.LogLevel = "error"
	cfg.CNI.ConfDir, cfg.CNI.BinDirs, cfg.CNI.WriteDefault = filepath.Join(h.node, "net.d"), cniBinDirs, false
	cfg.CNI.Timeout = config.Duration(20 * time.Second)
	cfg.ImagePullProgressTimeout = config.Duration(10 * time.Second)
	cfg.Registries = map[string]config.Registry{"*": {Endpoints: []string{"http://" + registryHost}, SkipUpstream: true}}
	cfg.CDI.SpecDirs = []string{filepath.Join(h.node, "cdi")}
	if err := cfg.Validate(); err != nil {
		f.Fatal(err)
	}
	return cfg
}

// serve builds huskd's parts as serve does, recovers, and serves the CRI
// on the socket.
func (h *fuzzHusk) serve(f *testing.F, cfg *config.Config) {
	if err := prepareProcess(cfg); err != nil {
		f.Fatal(err)
	}
	d, err := build(cfg, newLogger("text", cfg.LogLevel, io.Discard))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(d.close)
	if err := d.recover(); err != nil {
		f.Fatal(err)
	}
	stream, err := d.startStream()
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { stream.Close() })
	srv := d.criServer(stream)
	lis, err := listen(cfg.Listen)
	if err != nil {
		f.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	f.Cleanup(srv.Stop)
	stopReaper := make(chan struct{})
	go reapOrphans(d.log, 2*time.Second, stopReaper)
	f.Cleanup(func() { close(stopReaper) })
	conn, err := grpc.NewClient("unix://"+cfg.Listen, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { conn.Close() })
	h.conn, h.rt, h.images = conn, runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)
}

// nodeEntries is what the node dir holds once huskd runs.
func (h *fuzzHusk) nodeEntries(f *testing.F) []string {
	ents, err := os.ReadDir(h.node)
	if err != nil {
		f.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// run sends the sequence data encodes, then removes what it made and
// checks what is left.
func (h *fuzzHusk) run(t *testing.T, data []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := newProgram(h.gen, data, h.imageID)
	for p.next() {
		start := time.Now()
		code, msg := p.call(h.conn)
		took := time.Since(start)
		if trace {
			t.Logf("%s: %s in %s: %.300s", p.method(), code, took.Round(time.Millisecond), msg)
		}
		if h.logFile != nil && (code == "Unknown" || code == "Internal" || took > 5*time.Second) {
			fmt.Fprintf(h.logFile, "%s %s in %s: %s\n  request: %v\n", p.method(), code, took.Round(time.Millisecond), msg, p.req)
		}
	}
	start := time.Now()
	bad := h.removeAll()
	if took := time.Since(start); h.logFile != nil && took > 5*time.Second {
		fmt.Fprintf(h.logFile, "removing everything took %s\n", took.Round(time.Millisecond))
	}
	if len(bad) > 0 {
		t.Fatalf("after the sequence, removing every pod and container:\n  %s", strings.Join(bad, "\n  "))
	}
	h.checkOutside(t)
}

// removeAll stops and removes every container and pod, as the kubelet
// would, puts busybox:fuzz back if the sequence removed it, and returns
// what went wrong and what is left.
func (h *fuzzHusk) removeAll() []string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var bad []string
	ctrs, err := h.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		return []string{fmt.Sprintf("ListContainers: %v", err)}
	}
	for _, c := range ctrs.Containers {
		if _, err := h.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: c.Id}); err != nil {
			bad = append(bad, fmt.Sprintf("RemoveContainer %s (%s): %v", c.Id, c.State, err))
		}
	}
	pods, err := h.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return append(bad, fmt.Sprintf("ListPodSandbox: %v", err))
	}
	for _, p := range pods.Items {
		if _, err := h.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			bad = append(bad, fmt.Sprintf("StopPodSandbox %s: %v", p.Id, err))
		}
		if _, err := h.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			bad = append(bad, fmt.Sprintf("RemovePodSandbox %s: %v", p.Id, err))
		}
	}
	if err := h.restoreImage(ctx); err != nil {
		bad = append(bad, err.Error())
	}
	// What ends asynchronously (a monitor told to exit) gets a moment.
	leaks := h.leaks()
	for deadline := time.Now().Add(5 * time.Second); len(leaks) > 0 && time.Now().Before(deadline); leaks = h.leaks() {
		time.Sleep(50 * time.Millisecond)
	}
	return append(bad, leaks...)
}

// restoreImage pulls busybox:fuzz again when the sequence removed it or
// its tag.
func (h *fuzzHusk) restoreImage(ctx context.Context) error {
	imgs, err := h.images.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		return fmt.Errorf("ListImages: %w", err)
	}
	for _, img := range imgs.Images {
		if img.Id == h.imageID && slices.Contains(img.RepoTags, "docker.io/library/"+fuzzBusybox) {
			return nil
		}
	}
	if _, err := h.images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: fuzzBusybox}}); err != nil {
		return fmt.Errorf("pull %s again: %w", fuzzBusybox, err)
	}
	return nil
}

// leaks lists what is left of pods once all are removed: netns pins,
// mounts, veths, IP allocations, processes in the pods' cgroups, per-pod
// and per-container dirs, monitors.
func (h *fuzzHusk) leaks() []string {
	var out []string
	state, root := filepath.Join(h.node, "state"), filepath.Join(h.node, "root")
	for _, d := range []string{filepath.Join(state, "netns"), filepath.Join(state, "sandboxes"), filepath.Join(state, "containers"),
		filepath.Join(state, "monitors"), filepath.Join(root, "containers")} {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			out = append(out, "dir "+filepath.Join(d, e.Name()))
		}
	}
	// The node's infra root and the pin of the mount namespace direct
	// infras share are huskd's, made once and kept while it runs.
	nodeWide := map[string]bool{filepath.Join(state, "infra-rootfs"): true, filepath.Join(state, "infra-ns"): true,
		filepath.Join(state, "infra-ns", "mnt"): true}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], h.top+"/") && !nodeWide[f[4]] {
			out = append(out, "mount "+f[4])
		}
	}
	if links, _ := exec.Command("ip", "-o", "link", "show", "master", h.bridge).Output(); len(bytes.TrimSpace(links)) > 0 {
		out = append(out, "veths: "+string(links))
	}
	ipam, _ := filepath.Glob(filepath.Join(h.node, "ipam", "*", "10.*"))
	for _, ip := range ipam {
		out = append(out, "IP allocation "+filepath.Base(ip))
	}
	for _, pid := range processesIn(h.cgroup, h.top) {
		cmd, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		out = append(out, fmt.Sprintf("process %d: %s", pid, bytes.ReplaceAll(cmd, []byte{0}, []byte{' '})))
	}
	return out
}

// processesIn lists live processes in cgroup parent (any hierarchy) or
// whose command line names dir (the monitors).
func processesIn(cgroup, dir string) []int {
	var out []int
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		pid, _ := strconv.Atoi(filepath.Base(p))
		if pid == os.Getpid() {
			continue
		}
		cg, _ := os.ReadFile(p + "/cgroup")
		cmd, _ := os.ReadFile(p + "/cmdline")
		if !bytes.Contains(cg, []byte(cgroup+"/")) && !bytes.Contains(cmd, []byte(dir+"/")) {
			continue
		}
		if stat, err := os.ReadFile(p + "/stat"); err == nil {
			if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] != 'Z' {
				out = append(out, pid)
			}
		}
	}
	return out
}

// canaryDirs are where a path token (which carries the canary) could
// land outside huskd's dirs.
var canaryDirs = []string{"/", "/tmp", "/etc", "/run", "/var/lib", "/var/log", "/sys/fs/cgroup/*", "/sys/fs/cgroup/*/*"}

// checkOutside fails the test when the guard levels or the node dir hold
// anything new, or a canary file exists.
func (h *fuzzHusk) checkOutside(t *testing.T) {
	for dir, want := range h.guard {
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatalf("guard dir: %v", err)
		}
		for _, e := range ents {
			if !slices.Contains(want, e.Name()) {
				t.Errorf("written outside huskd's dirs: %s", filepath.Join(dir, e.Name()))
				_ = os.RemoveAll(filepath.Join(dir, e.Name()))
			}
		}
	}
	// Once every pod and container is removed, nothing of theirs is left
	// to carry the canary in its name, inside the node either (a log path
	// that left its pod's log dir for another of the node's dirs).
	_ = filepath.WalkDir(h.top, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), canary) {
			t.Errorf("written outside where the request's object lives: %s", p)
			_ = os.RemoveAll(p)
			return filepath.SkipDir
		}
		return nil
	})
	// A relative path would be resolved against this process's dir.
	cwd, _ := os.Getwd()
	for _, d := range append(canaryDirs, cwd, filepath.Join(cwd, "relative")) {
		found, _ := filepath.Glob(filepath.Join(d, "*"+canary+"*"))
		for _, p := range found {
			t.Errorf("written outside huskd's dirs: %s", p)
			if strings.HasPrefix(p, "/sys/fs/cgroup") {
				_ = unix.Rmdir(p)
			} else {
				_ = os.RemoveAll(p)
			}
		}
	}
}

// cleanup removes the node and whatever is left of its pods, once huskd's
// parts stopped.
func (h *fuzzHusk) cleanup() {
	if h.logFile != nil {
		h.logFile.Close()
	}
	removeFuzzDir(h.top, h.bridge, h.cgroup)
}

// cleanStaleFuzzDirs removes the nodes of fuzz processes that are gone:
// `go test -fuzz` kills a worker that does not stop within 2 s, which may
// leave a sequence's pods behind.
func cleanStaleFuzzDirs(f *testing.F) {
	dirs, _ := filepath.Glob("/tmp/hfz-*")
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "owner"))
		fields := strings.Fields(string(b))
		if err != nil || len(fields) != 3 {
			continue
		}
		pid, _ := strconv.Atoi(fields[0])
		if pid > 0 && unix.Kill(pid, 0) == nil {
			continue // a live fuzz process
		}
		f.Logf("removing the node of fuzz process %d, which is gone", pid)
		removeFuzzDir(d, fields[1], fields[2])
	}
}

// removeFuzzDir ends the processes of a fuzz node, deletes its runtime
// containers, unmounts what is mounted below it, deletes its bridge and
// cgroups, and removes it.
func removeFuzzDir(top, bridge, cgroup string) {
	for _, pid := range processesIn(cgroup, top) {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	for _, rt := range []string{"runc", "crun"} {
		root := filepath.Join(top, "a/b/c/n/state/runtime", rt)
		ents, _ := os.ReadDir(root)
		for _, e := range ents {
			_ = exec.Command(rt, "--root", root, "delete", "--force", e.Name()).Run()
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	lines := strings.Split(string(mi), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if f := strings.Fields(lines[i]); len(f) > 4 && strings.HasPrefix(f[4], top+"/") {
			_ = unix.Unmount(f[4], unix.MNT_DETACH)
		}
	}
	_ = exec.Command("ip", "link", "del", bridge).Run()
	hier, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, hr := range append(hier, "/sys/fs/cgroup") {
		var dirs []string
		_ = filepath.Walk(filepath.Join(hr, cgroup), func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = unix.Rmdir(dirs[i])
		}
	}
	if err := os.RemoveAll(top); err != nil && !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(os.Stderr, "FuzzCRI: remove %s: %v\n", top, err)
	}
}

// The seed that goes through every RPC names each method of both
// services, so the seed run alone sends every RPC.
func TestFuzzSeedCoversEveryRPC(t *testing.T) {
	for _, m := range criMethods {
		if !slices.Contains(everyRPC, m.name) {
			t.Errorf("%s is in no seed of FuzzCRI", m.path)
		}
	}
}
