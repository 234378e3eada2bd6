package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// runTag tells this run's bridges and cgroups from those of another run
// on the same machine (each removes its own at the end).
var runTag = strconv.Itoa(os.Getpid() % 1000000)

// huskCgroup is the cgroup parent of husk's pods in this run.
var huskCgroup = "hbench-husk-" + runTag

// runtimeUnderTest is one started runtime with its own dirs and network.
type runtimeUnderTest struct {
	side    string
	dir     string
	socket  string
	bridge  string
	subnet  string
	daemon  *exec.Cmd
	log     *os.File
	conn    *grpc.ClientConn
	rt      runtimeapi.RuntimeServiceClient
	logDirs string
	image   string // the pause image tarball containerd imports
	// pprof is huskd's pprof address (-profile); "" without.
	pprof string
}

// conflist is the network both runtimes get: only the bridge name, subnet
// and IPAM dir differ. masq adds the bridge plugin's per-pod masquerade
// chain (nine iptables execs per ADD, six per DEL).
func conflist(name, bridge, subnet, ipamDir string, masq bool) string {
	return fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "plugins": [
 {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": %t,
  "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}},
 {"type": "portmap", "capabilities": {"portMappings": true}}]}
`, name, bridge, masq, ipamDir, subnet)
}

func startRuntime(ctx context.Context, side string, o options, index int, masq bool) (*runtimeUnderTest, error) {
	dir, err := os.MkdirTemp("", "hbench-"+side+"-")
	if err != nil {
		return nil, err
	}
	n, _ := rand.Int(rand.Reader, big.NewInt(120))
	r := &runtimeUnderTest{
		side: side, dir: dir, socket: filepath.Join(dir, "cri.sock"),
		bridge: fmt.Sprintf("hb%s-%d", runTag, index), subnet: fmt.Sprintf("10.200.%d.0/24", 2*n.Int64()+int64(index)+2),
		logDirs: filepath.Join(dir, "pods"),
	}
	netDir := filepath.Join(dir, "net.d")
	if err := os.MkdirAll(netDir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(netDir, "10-bench.conflist"),
		[]byte(conflist("bench-"+side, r.bridge, r.subnet, filepath.Join(dir, "ipam"), masq)), 0o644); err != nil {
		return nil, err
	}
	r.log, err = os.Create(filepath.Join(dir, side+".log"))
	if err != nil {
		return nil, err
	}
	switch side {
	case "husk":
		cfg := fmt.Sprintf("pause_binary = %q\ncgroup_parent = \"/%s\"\n[cni]\nconf_dir = %q\nbin_dirs = [\"/usr/lib/cni\", \"/opt/cni/bin\"]\ncache_dir = %q\nwrite_default = false\n[registries.\"*\"]\nendpoints = [\"http://%s\"]\nskip_upstream = true\n",
			o.pause, huskCgroup, netDir, filepath.Join(dir, "cni"), o.registry) + o.huskConfig
		if o.huskDownloads > 0 {
			cfg = fmt.Sprintf("max_concurrent_downloads = %d\n", o.huskDownloads) + cfg
		}
		if o.profile != "" {
			cfg += "[debug]\naddress = \"127.0.0.1:0\"\n"
		}
		if err := os.WriteFile(filepath.Join(dir, "husk.toml"), []byte(cfg), 0o644); err != nil {
			return nil, err
		}
		r.daemon = exec.Command(o.huskd, "--config", filepath.Join(dir, "husk.toml"), "--root", filepath.Join(dir, "root"),
			"--state", filepath.Join(dir, "state"), "--listen", r.socket)
		if o.debug {
			r.daemon.Args = append(r.daemon.Args, "--log-level", "debug")
		}
	case "containerd":
		image, err := buildPauseImage(dir)
		if err != nil {
			return nil, err
		}
		cfgPath := filepath.Join(dir, "containerd.toml")
		if err := os.WriteFile(cfgPath, []byte(containerdConfig(dir, r.socket, netDir, o.registry)), 0o644); err != nil {
			return nil, err
		}
		r.daemon = exec.Command("containerd", "--config", cfgPath)
		r.image = image
	}
	r.daemon.Stdout, r.daemon.Stderr = r.log, r.log
	r.daemon.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r.daemon.Start(); err != nil {
		r.close(false)
		return nil, err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("unix", r.socket); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(r.log.Name())
			r.close(false)
			return nil, fmt.Errorf("did not start:\n%s", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.conn, err = grpc.NewClient("unix://"+r.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		r.close(false)
		return nil, err
	}
	r.rt = runtimeapi.NewRuntimeServiceClient(r.conn)
	vctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		if _, err = r.rt.Version(vctx, &runtimeapi.VersionRequest{}); err == nil {
			break
		}
		if vctx.Err() != nil {
			r.close(false)
			return nil, fmt.Errorf("version: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if side == "husk" && o.profile != "" {
		if r.pprof, err = logValue(r.log.Name(), "pprof serving", "address"); err != nil {
			r.close(false)
			return nil, err
		}
	}
	if r.image != "" {
		if err := importImage(r.socket, r.image); err != nil {
			r.close(false)
			return nil, err
		}
	}
	return r, nil
}

func containerdConfig(dir, socket, netDir, registry string) string {
	return fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"
  disable_apparmor = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
    endpoint = ["http://%s"]
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), socket, socket+".ttrpc", filepath.Join(dir, "opt"), netDir, registry)
}

// buildPauseImage writes an OCI image layout tarball named
// registry.k8s.io/pause:3.9 holding a static pause: Kubernetes' pause.c
// from shared/critest/src beside the repo compiled with gcc -static, or,
// where that source is not at hand, Debian's static catatonit -P.
func buildPauseImage(dir string) (string, error) {
	bin := filepath.Join(dir, "pause")
	entrypoint := []string{"/pause"}
	src := ""
	for _, c := range []string{"../shared/critest/src/pause.c", "/work/shared/critest/src/pause.c"} {
		if _, err := os.Stat(c); err == nil {
			src = c
			break
		}
	}
	if src != "" {
		if out, err := exec.Command("gcc", "-static", "-Os", "-o", bin, src).CombinedOutput(); err != nil {
			return "", fmt.Errorf("compile pause.c: %v: %s", err, out)
		}
	} else {
		b, err := os.ReadFile("/usr/bin/catatonit")
		if err != nil {
			return "", fmt.Errorf("no pause.c and no catatonit for the pause image: %w", err)
		}
		if err := os.WriteFile(bin, b, 0o755); err != nil {
			return "", err
		}
		entrypoint = []string{"/pause", "-P"}
	}
	fmt.Fprintf(os.Stderr, "husk-bench: containerd pause image from %s\n", map[bool]string{true: src, false: "/usr/bin/catatonit -P"}[src != ""])
	pauseBytes, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	if err := tw.WriteHeader(&tar.Header{Name: "pause", Mode: 0o755, Size: int64(len(pauseBytes)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
		return "", err
	}
	if _, err := tw.Write(pauseBytes); err != nil {
		return "", err
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	digest := func(b []byte) string { s := sha256.Sum256(b); return "sha256:" + hex.EncodeToString(s[:]) }
	layerDigest := digest(layer.Bytes())
	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Entrypoint": entrypoint},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": len(config)},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layerDigest, "size": layer.Len()}},
	})
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"manifests": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(manifest), "size": len(manifest),
			"annotations": map[string]string{"io.containerd.image.name": "registry.k8s.io/pause:3.9", "org.opencontainers.image.ref.name": "3.9"},
		}},
	})
	out := filepath.Join(dir, "pause-image.tar")
	f, err := os.Create(out)
	if err != nil {
		return "", err
	}
	defer f.Close()
	w := tar.NewWriter(f)
	files := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
		{"blobs/sha256/" + strings.TrimPrefix(digest(config), "sha256:"), config},
		{"blobs/sha256/" + strings.TrimPrefix(digest(manifest), "sha256:"), manifest},
		{"blobs/sha256/" + strings.TrimPrefix(layerDigest, "sha256:"), layer.Bytes()},
	}
	for _, fl := range files {
		if err := w.WriteHeader(&tar.Header{Name: fl.name, Mode: 0o644, Size: int64(len(fl.data)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
			return "", err
		}
		if _, err := w.Write(fl.data); err != nil {
			return "", err
		}
	}
	return out, w.Close()
}

func importImage(socket, image string) error {
	out, err := exec.Command("ctr", "-a", socket, "-n", "k8s.io", "images", "import", image).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr import: %v: %s", err, out)
	}
	out, err = exec.Command("ctr", "-a", socket, "-n", "k8s.io", "images", "ls", "-q").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "registry.k8s.io/pause:3.9") {
		return fmt.Errorf("pause image not listed after import: %v: %s", err, out)
	}
	return nil
}

// close stops the daemon and removes everything the run left.
func (r *runtimeUnderTest) close(keep bool) {
	if r.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		if resp, err := r.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
			for _, p := range resp.Items {
				_, _ = r.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id})
				_, _ = r.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id})
			}
		}
		cancel()
		r.conn.Close()
	}
	if r.daemon != nil && r.daemon.Process != nil {
		_ = r.daemon.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = r.daemon.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = r.daemon.Process.Kill()
			<-done
		}
		if ps := r.daemon.ProcessState; ps != nil {
			fmt.Fprintf(os.Stderr, "husk-bench: %s: daemon CPU time over the run: user %.2f s, system %.2f s\n",
				r.side, ps.UserTime().Seconds(), ps.SystemTime().Seconds())
		}
	}
	if r.log != nil {
		r.log.Close()
	}
	// Mounts the runtime left under its dirs, deepest first.
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	lines := strings.Split(string(mi), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if f := strings.Fields(lines[i]); len(f) > 4 && strings.HasPrefix(f[4], r.dir+"/") {
			_ = unix.Unmount(f[4], unix.MNT_DETACH)
		}
	}
	_ = exec.Command("ip", "link", "del", r.bridge).Run()
	// The runtimes' parent cgroups, when empty: husk's is the bench's own,
	// containerd's default is /k8s.io.
	for _, parent := range []string{huskCgroup, "k8s.io", nodeCgroup(r.side)} {
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + parent + "/*")
		more, _ := filepath.Glob("/sys/fs/cgroup/*/" + parent)
		for _, d := range append(dirs, more...) {
			_ = unix.Rmdir(d)
		}
		_ = unix.Rmdir("/sys/fs/cgroup/" + parent)
	}
	if !keep {
		_ = os.RemoveAll(r.dir)
	} else {
		fmt.Fprintf(os.Stderr, "husk-bench: kept %s\n", r.dir)
	}
}
