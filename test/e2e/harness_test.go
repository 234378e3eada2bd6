// Package e2e drives huskd as a black box through its CRI socket, as root,
// with real runc/crun, CNI plugins, namespaces and iptables. Every test
// starts its own huskd with its own root, state, socket, CNI config, bridge,
// /24 in 10.200.0.0/16 and cgroup parent, so tests run in parallel with each
// other and with a husk serving the node.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	if reason := optedOut(); reason != "" {
		fmt.Printf("e2e: not run: %s\n", reason)
		os.Exit(0)
	}
	if missing := missingPrerequisites(); len(missing) > 0 {
		fmt.Printf("e2e: FAIL: cannot run:\n  %s\n"+
			"scripts/deps.sh installs the tools; HUSK_E2E=skip (or -short) skips this suite on purpose\n",
			strings.Join(missing, "\n  "))
		os.Exit(1)
	}
	binDir = os.Getenv("HUSK_BIN")
	if binDir == "" {
		dir, err := os.MkdirTemp("", "husk-e2e-bin-")
		if err != nil {
			panic(err)
		}
		defer os.RemoveAll(dir)
		// The binaries belong to the husk module two levels up; this
		// test module only talks to them over their sockets.
		for _, b := range []struct{ out, pkg, cgo string }{
			{"huskd", "./cmd/huskd", "1"},
			{"husk-pause", "./cmd/husk-pause", "0"},
			{"husk-monitor", "./cmd/husk-monitor", "0"},
		} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b.out), b.pkg)
			cmd.Dir = "../.."
			cmd.Env = append(os.Environ(), "CGO_ENABLED="+b.cgo)
			if out, err := cmd.CombinedOutput(); err != nil {
				fmt.Printf("e2e: build %s: %v\n%s", b.out, err, out)
				os.Exit(1)
			}
		}
		binDir = dir
	}
	ensureHugetlb()
	// Infra processes outlive a killed huskd; as their subreaper this test
	// process reaps them, as systemd would on a node.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		panic(err)
	}
	stop := make(chan struct{})
	go reapOrphans(stop)
	code := m.Run()
	close(stop)
	removePortmapScaffolding()
	os.Exit(code)
}

// optedOut says why the suite must not run, when it was asked not to:
// HUSK_E2E=skip, or -short (which means "no test that needs root or the
// kernel" in both modules). Nothing else skips the suite: a suite that ran
// nothing must not say ok.
func optedOut() string {
	if v := os.Getenv("HUSK_E2E"); v == "skip" {
		return "HUSK_E2E=skip"
	} else if v != "" {
		fmt.Printf("e2e: HUSK_E2E=%q means nothing; only \"skip\" skips the suite\n", v)
	}
	if testing.Short() {
		return "-short (every e2e test needs root, runc and CNI plugins)"
	}
	return ""
}

// missingPrerequisites lists what the whole suite needs and this machine
// lacks. busybox is checked per test (requireBusybox): only the container
// tests need it.
func missingPrerequisites() []string {
	var out []string
	if os.Geteuid() != 0 {
		out = append(out, fmt.Sprintf("needs root (euid %d): namespaces, mounts, cgroups, iptables", os.Geteuid()))
	}
	for _, c := range []string{"runc", "crun", "iptables", "iptables-save", "ip", "nsenter", "unshare"} {
		if _, err := exec.LookPath(c); err != nil {
			out = append(out, "needs "+c+" on PATH")
		}
	}
	for _, p := range []string{"bridge", "host-local", "portmap"} {
		if !exists(filepath.Join("/usr/lib/cni", p)) && !exists(filepath.Join("/opt/cni/bin", p)) {
			out = append(out, "needs the CNI plugin "+p+" in /usr/lib/cni or /opt/cni/bin")
		}
	}
	return out
}

// ci reports whether CI=true: a missing prerequisite of a test then fails
// it instead of skipping it.
func ci() bool {
	v, _ := strconv.ParseBool(os.Getenv("CI"))
	return v
}

// requireBusybox skips (fails under CI=true) a test that builds its image
// from the host's static busybox, when there is none.
func requireBusybox(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/bin/busybox"); err != nil {
		if ci() {
			t.Fatalf("needs /bin/busybox (apt install busybox-static): %v; CI=true, so this fails instead of skipping", err)
		}
		t.Skipf("needs /bin/busybox (apt install busybox-static): %v; skipped (under CI=true this fails)", err)
	}
}

// removePortmapScaffolding removes the chains the portmap plugin creates
// once and shares between all pods (it never removes them), but only when
// no pod on this machine maps a port any more: a husk serving the node may
// use them.
func removePortmapScaffolding() {
	out, err := exec.Command("iptables", "-t", "nat", "-S", "CNI-HOSTPORT-DNAT").Output()
	if err != nil || strings.Contains(string(out), "-A CNI-HOSTPORT-DNAT") {
		return
	}
	ipt := func(args ...string) bool {
		return exec.Command("iptables", append([]string{"-t", "nat"}, args...)...).Run() == nil
	}
	for ipt("-D", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT") {
	}
	for ipt("-D", "OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT") {
	}
	for ipt("-D", "POSTROUTING", "-m", "comment", "--comment", "CNI portfwd requiring masquerade", "-j", "CNI-HOSTPORT-MASQ") {
	}
	for _, c := range []string{"CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK"} {
		ipt("-F", c)
	}
	for _, c := range []string{"CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK"} {
		ipt("-X", c)
	}
}

// ensureHugetlb mounts the hugetlb v1 hierarchy crun needs on this hybrid
// cgroup layout, when it is missing.
func ensureHugetlb() {
	if _, err := os.Stat("/sys/fs/cgroup/memory"); err != nil {
		return
	}
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, " - cgroup ") && strings.Contains(l, "hugetlb") {
			return
		}
	}
	_ = os.MkdirAll("/sys/fs/cgroup/hugetlb", 0o755)
	_ = unix.Mount("cgroup", "/sys/fs/cgroup/hugetlb", "cgroup", 0, "hugetlb")
}

// orphanNames are the processes that reach this test process when a huskd
// it started dies; its own exec children are never among them.
var orphanNames = map[string]bool{"husk-pause": true, "husk-monitor": true, "runc": true, "crun": true, "runc:[2:INIT]": true}

func reapOrphans(stop chan struct{}) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		tasks, _ := os.ReadDir("/proc/self/task")
		for _, task := range tasks {
			b, _ := os.ReadFile("/proc/self/task/" + task.Name() + "/children")
			for _, f := range strings.Fields(string(b)) {
				pid, _ := strconv.Atoi(f)
				comm, state := procCommState(pid)
				if state == "Z" && orphanNames[comm] {
					var ws unix.WaitStatus
					_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
				}
			}
		}
	}
}

func procCommState(pid int) (comm, state string) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", ""
	}
	s := string(b)
	open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || close < open || close+3 > len(s) {
		return "", ""
	}
	return s[open+1 : close], s[close+2 : close+3]
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// env is one isolated husk installation: dirs, CNI network and cgroup parent.
type env struct {
	t            *testing.T
	dir          string
	root, state  string
	socket       string
	confDir      string
	ipamDir      string
	bridge       string
	subnet       *net.IPNet
	cgroupParent string
	configPath   string
	extraConfig  string
	// rootConfig are top-level keys, written before the first table.
	rootConfig string
	// daemonEnv is added to huskd's environment.
	daemonEnv []string
	// plugins replaces the CNI plugin list; "-" writes no network at all.
	plugins string

	mu     sync.Mutex
	daemon *exec.Cmd
	logBuf *syncBuffer
	conn   *grpc.ClientConn
	rt     runtimeapi.RuntimeServiceClient
	// servers are processes a test runs in its pods' namespaces.
	servers []*exec.Cmd
	// netns holds the inode of each network namespace this env's pods
	// had, so the leak check finds any task still inside one.
	netns map[uint64]string
}

type envOption func(*env)

// withConfig appends TOML to the generated config.
func withConfig(toml string) envOption { return func(e *env) { e.extraConfig += toml } }

// withRootConfig adds top-level keys to the generated config.
func withRootConfig(toml string) envOption { return func(e *env) { e.rootConfig += toml } }

// withDaemonEnv adds KEY=value to huskd's environment.
func withDaemonEnv(kv string) envOption {
	return func(e *env) { e.daemonEnv = append(e.daemonEnv, kv) }
}

// withPlugins replaces the plugin list of the CNI network (JSON objects);
// "-" leaves the CNI config dir empty.
func withPlugins(plugins string) envOption {
	return func(e *env) { e.plugins = plugins }
}

// claimSubnet returns a /24 of 10.200.0.0/16 that no other env on this
// machine uses, of this process or of another e2e run beside it (their
// leak checks would see each other's rules): an exclusive flock on a file
// per /24, held until the test ends.
func claimSubnet(t *testing.T) *net.IPNet {
	t.Helper()
	dir := filepath.Join(os.TempDir(), "husk-e2e-subnets")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	start, _ := rand.Int(rand.Reader, big.NewInt(250))
	for i := range int64(250) {
		n := (start.Int64() + i) % 250
		f, err := os.OpenFile(filepath.Join(dir, strconv.FormatInt(n, 10)), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
			f.Close()
			continue
		}
		t.Cleanup(func() { f.Close() }) // registered first: released last
		return &net.IPNet{IP: net.IPv4(10, 200, byte(n+2), 0).To4(), Mask: net.CIDRMask(24, 32)}
	}
	t.Fatal("every /24 of 10.200.0.0/16 is in use by e2e envs")
	return nil
}

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	id := randHex(3)
	subnet := claimSubnet(t)
	// /tmp, not t.TempDir: the socket path must stay short.
	dir, err := os.MkdirTemp("", "he2e-")
	if err != nil {
		t.Fatal(err)
	}
	// Traversable, as a node's /var/lib and /run are: containers in a
	// user namespace reach their rootfs below it.
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	e := &env{
		t: t, dir: dir,
		root: filepath.Join(dir, "root"), state: filepath.Join(dir, "state"),
		socket: filepath.Join(dir, "husk.sock"), confDir: filepath.Join(dir, "net.d"),
		ipamDir: filepath.Join(dir, "ipam"), bridge: "he" + id,
		subnet:       subnet,
		cgroupParent: "/husk-e2e-" + id,
		configPath:   filepath.Join(dir, "husk.toml"),
	}
	for _, o := range opts {
		o(e)
	}
	if err := os.MkdirAll(e.confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if e.plugins != "-" {
		e.writeNetwork()
	}
	cfg := fmt.Sprintf(`pause_binary = %q
cgroup_parent = %q
`+e.rootConfig+`[cni]
conf_dir = %q
bin_dirs = ["/usr/lib/cni", "/opt/cni/bin"]
write_default = false
`, filepath.Join(binDir, "husk-pause"), e.cgroupParent, e.confDir)
	if err := os.WriteFile(e.configPath, []byte(cfg+e.extraConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.cleanup)
	return e
}

func (e *env) writeNetwork() {
	plugins := e.plugins
	if plugins == "" {
		plugins = e.bridgePlugin() + `, {"type": "portmap", "capabilities": {"portMappings": true}}`
	}
	conf := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "e2e-%s", "plugins": [%s]}`, e.bridge, plugins)
	if err := os.WriteFile(filepath.Join(e.confDir, "10-e2e.conflist"), []byte(conf), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) bridgePlugin() string {
	return fmt.Sprintf(`{"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": true,
 "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}}`,
		e.bridge, e.ipamDir, e.subnet.String())
}

// start runs huskd and connects to it.
func (e *env) start() {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failOnRaces()
	e.logBuf = &syncBuffer{}
	cmd := exec.Command(filepath.Join(binDir, "huskd"), "--config", e.configPath, "--root", e.root,
		"--state", e.state, "--listen", e.socket, "--log-level", "debug")
	cmd.Stdout = e.logBuf
	cmd.Stderr = e.logBuf
	cmd.Env = append(os.Environ(), e.daemonEnv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.daemon = cmd
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("unix", e.socket); err == nil {
			c.Close()
			break
		}
		if cmd.ProcessState != nil || time.Now().After(deadline) || !alive(cmd.Process.Pid) {
			e.t.Fatalf("huskd did not start:\n%s", e.logBuf.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	conn, err := grpc.NewClient("unix://"+e.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		e.t.Fatal(err)
	}
	e.conn = conn
	e.rt = runtimeapi.NewRuntimeServiceClient(conn)
}

func alive(pid int) bool {
	_, state := procCommState(pid)
	return state != "" && state != "Z"
}

// kill9 kills huskd as a crash would.
func (e *env) kill9() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.daemon == nil {
		return
	}
	_ = e.daemon.Process.Kill()
	_ = e.daemon.Wait()
	e.daemon = nil
	e.conn.Close()
}

// stop ends huskd with SIGTERM.
func (e *env) stop() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.daemon == nil {
		return nil
	}
	_ = e.daemon.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- e.daemon.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(15 * time.Second):
		_ = e.daemon.Process.Kill()
		err = fmt.Errorf("huskd ignored SIGTERM for 15s")
		<-done
	}
	e.daemon = nil
	e.conn.Close()
	return err
}

func (e *env) logs() string { return e.logBuf.String() }

func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	e.t.Cleanup(cancel)
	return ctx
}

// podConfig is a sandbox config as the kubelet sends it.
func (e *env) podConfig(name string) *runtimeapi.PodSandboxConfig {
	uid := randHex(8)
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "e2e", Uid: uid, Attempt: 0},
		Hostname:     name,
		LogDirectory: filepath.Join(e.dir, "logs", "e2e_"+name+"_"+uid),
		DnsConfig:    &runtimeapi.DNSConfig{Servers: []string{"10.96.0.10"}, Searches: []string{"e2e.svc.cluster.local"}, Options: []string{"ndots:5"}},
		Labels:       map[string]string{"app": name, "io.kubernetes.pod.namespace": "e2e"},
		Annotations:  map[string]string{"note": "e2e"},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent:    e.cgroupParent + "/pod" + uid,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{}},
		},
	}
}

func (e *env) runPod(cfg *runtimeapi.PodSandboxConfig, handler string) string {
	e.t.Helper()
	resp, err := e.rt.RunPodSandbox(e.ctx(), &runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: handler})
	if err != nil {
		e.t.Fatalf("RunPodSandbox: %v\nhuskd log:\n%s", err, e.logs())
	}
	e.notePod(resp.PodSandboxId)
	return resp.PodSandboxId
}

// netnsPin is where huskd pins the network namespace of sandbox id.
func (e *env) netnsPin(id string) string { return filepath.Join(e.state, "netns", id) }

// notePod records the network namespace of sandbox id (none for a
// host-network pod), for the leak check.
func (e *env) notePod(id string) {
	var st unix.Stat_t
	if unix.Stat(e.netnsPin(id), &st) != nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.netns == nil {
		e.netns = map[uint64]string{}
	}
	e.netns[st.Ino] = id
}

func (e *env) status(id string) (*runtimeapi.PodSandboxStatus, sandboxInfo) {
	e.t.Helper()
	resp, err := e.rt.PodSandboxStatus(e.ctx(), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
	if err != nil {
		e.t.Fatalf("PodSandboxStatus %s: %v", id, err)
	}
	var info sandboxInfo
	if err := json.Unmarshal([]byte(resp.Info["info"]), &info); err != nil {
		e.t.Fatalf("verbose info: %v: %q", err, resp.Info["info"])
	}
	return resp.Status, info
}

type sandboxInfo struct {
	PID         int    `json:"pid"`
	NetnsPath   string `json:"netnsPath"`
	CgroupsPath string `json:"cgroupsPath"`
	ShmPath     string `json:"shmPath"`
}

func (e *env) stopRemove(id string) {
	e.t.Helper()
	e.notePod(id)
	if _, err := e.rt.StopPodSandbox(e.ctx(), &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		e.t.Fatalf("StopPodSandbox %s: %v\n%s", id, err, e.logs())
	}
	if _, err := e.rt.RemovePodSandbox(e.ctx(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		e.t.Fatalf("RemovePodSandbox %s: %v\n%s", id, err, e.logs())
	}
}

// leaks lists everything of this env still on the machine: netns pins and
// mounts under its dirs, veths on its bridge, IP allocations, iptables
// rules naming its sandboxes or subnet, infra processes and cgroups.
func (e *env) leaks(ids ...string) []string {
	var out []string
	if ents, _ := os.ReadDir(filepath.Join(e.state, "netns")); len(ents) > 0 {
		for _, en := range ents {
			out = append(out, "netns pin "+en.Name())
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		f := strings.Fields(l)
		// The infra's read-only root and the infras' mount namespace are
		// huskd's, made once per boot.
		if len(f) > 4 && strings.HasPrefix(f[4], e.dir+"/") && !strings.HasPrefix(f[4], filepath.Join(e.state, "infra-")) {
			out = append(out, "mount "+f[4])
		}
	}
	if links, _ := exec.Command("ip", "-o", "link", "show", "master", e.bridge).Output(); len(bytes.TrimSpace(links)) > 0 {
		out = append(out, "veths on "+e.bridge+": "+string(links))
	}
	if ents, _ := os.ReadDir(e.ipamDir); len(ents) > 0 {
		for _, d := range ents {
			sub, _ := os.ReadDir(filepath.Join(e.ipamDir, d.Name()))
			for _, f := range sub {
				if net.ParseIP(f.Name()) != nil {
					out = append(out, "IP allocation "+f.Name())
				}
			}
		}
	}
	rules, _ := exec.Command("iptables-save").Output()
	for _, l := range strings.Split(string(rules), "\n") {
		for _, id := range ids {
			if strings.Contains(l, id) || (len(id) > 12 && strings.Contains(l, id[:12])) {
				out = append(out, "iptables: "+l)
			}
		}
		if strings.Contains(l, e.subnet.IP.String()) && strings.HasPrefix(l, "-A") {
			out = append(out, "iptables: "+l)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cgroup")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte(e.cgroupParent+"/")) {
			pid := strings.Split(p, "/")[2]
			if comm, st := procCommState(atoi(pid)); st != "" && st != "Z" {
				out = append(out, "process "+pid+" "+comm)
			}
		}
	}
	for _, d := range []string{filepath.Join(e.state, "sandboxes"), filepath.Join(e.state, "containers"),
		filepath.Join(e.state, "monitors"), filepath.Join(e.root, "containers")} {
		ents, _ := os.ReadDir(d)
		for _, en := range ents {
			out = append(out, "dir "+filepath.Join(d, en.Name()))
		}
	}
	for _, pid := range e.monitors() {
		out = append(out, "monitor process "+strconv.Itoa(pid))
	}
	e.mu.Lock()
	ours := maps.Clone(e.netns)
	e.mu.Unlock()
	for _, h := range netnsHolders(ours) {
		out = append(out, h.what)
	}
	if pid := e.huskdPID(); pid > 0 {
		if host, err := os.Readlink("/proc/self/ns/net"); err == nil {
			out = append(out, e.daemonNetnsProblems(host)...)
		}
	}
	return out
}

// daemonNetnsProblems lists how huskd is not wholly in the network
// namespace host: a dead or zombie thread-group leader, an unreadable
// /proc/<pid>/ns/net, or any thread in another namespace.
func (e *env) daemonNetnsProblems(host string) []string {
	pid := e.huskdPID()
	if pid == 0 {
		return nil
	}
	var out []string
	if _, st := procCommState(pid); st == "" || st == "Z" {
		out = append(out, fmt.Sprintf("huskd %d: thread-group leader in state %q", pid, st))
	}
	if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); err != nil || ns != host {
		out = append(out, fmt.Sprintf("huskd %d: /proc/%d/ns/net = %q, %v; want the host's %s", pid, pid, ns, err, host))
	}
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/task/%s/ns/net", pid, task.Name()))
		if err == nil && ns != host {
			out = append(out, fmt.Sprintf("huskd %d: thread %s in %s, not the host's %s", pid, task.Name(), ns, host))
		}
	}
	return out
}

// monitors lists the husk-monitor processes of this env (they run with
// -dir under its state dir).
func (e *env) monitors() []int {
	var out []int
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range cmdlines {
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte("husk-monitor")) && bytes.Contains(b, []byte(e.state+"/")) {
			pid := atoi(strings.Split(p, "/")[2])
			if _, st := procCommState(pid); st != "" && st != "Z" {
				out = append(out, pid)
			}
		}
	}
	return out
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

// assertNoLeaks fails the test with what is left, waiting briefly for
// asynchronous cleanups (a cancelled request's undo) to finish.
func (e *env) assertNoLeaks(ids ...string) {
	e.t.Helper()
	var l []string
	for i := 0; i < 50; i++ {
		if l = e.leaks(ids...); len(l) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Errorf("leaked:\n  %s\nhuskd log:\n%s", strings.Join(l, "\n  "), e.logs())
}

// cleanup stops huskd and removes whatever a failed test left behind.
func (e *env) cleanup() {
	if os.Getenv("HUSK_E2E_LOGS") != "" && e.logBuf != nil {
		e.t.Logf("huskd log:\n%s", e.logs())
	}
	e.stopServers()
	if e.daemon != nil && e.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if resp, err := e.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
			for _, p := range resp.Items {
				_, _ = e.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id})
				_, _ = e.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id})
			}
		}
		cancel()
	}
	_ = e.stop()
	// Last resort for a failed test: kill processes in our cgroups, and
	// the monitors huskd started for us.
	for _, pid := range e.monitors() {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cgroup")
	for _, p := range procs {
		if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(e.cgroupParent+"/")) {
			_ = unix.Kill(atoi(strings.Split(p, "/")[2]), unix.SIGKILL)
		}
	}
	for _, rt := range []string{"runc", "crun"} {
		root := filepath.Join(e.state, "runtime", rt)
		ents, _ := os.ReadDir(root)
		for _, en := range ents {
			_ = exec.Command(rt, "--root", root, "delete", "--force", en.Name()).Run()
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	lines := strings.Split(string(mi), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if f := strings.Fields(lines[i]); len(f) > 4 && strings.HasPrefix(f[4], e.dir+"/") {
			_ = unix.Unmount(f[4], unix.MNT_DETACH)
		}
	}
	_ = exec.Command("ip", "link", "del", e.bridge).Run()
	removeCgroups(e.cgroupParent)
	_ = os.RemoveAll(e.dir)
	e.failOnRaces()
}

// failOnRaces fails the test with the race detector's reports in huskd's
// log (make test builds the e2e huskd with -race).
func (e *env) failOnRaces() {
	if e.logBuf == nil {
		return
	}
	var reports []string
	log := e.logBuf.String()
	for {
		i := strings.Index(log, "WARNING: DATA RACE")
		if i < 0 {
			break
		}
		log = log[i:]
		end := strings.Index(log, "\n==================")
		if end < 0 {
			end = len(log)
		}
		reports = append(reports, log[:end])
		log = log[end:]
	}
	if len(reports) > 0 {
		e.t.Errorf("huskd's race detector reported %d data races:\n%s", len(reports), strings.Join(reports, "\n\n"))
	}
}

// removeCgroups removes the test's cgroup parent in every hierarchy,
// deepest first.
func removeCgroups(parent string) {
	hier, _ := filepath.Glob("/sys/fs/cgroup/*")
	hier = append(hier, "/sys/fs/cgroup")
	for _, h := range hier {
		base := filepath.Join(h, parent)
		var dirs []string
		_ = filepath.Walk(base, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = unix.Rmdir(dirs[i])
		}
	}
}

// syncBuffer collects huskd's log for failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// lines returns the log lines containing all of subs.
func (s *syncBuffer) lines(subs ...string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		ok := true
		for _, sub := range subs {
			ok = ok && strings.Contains(sc.Text(), sub)
		}
		if ok {
			out = append(out, sc.Text())
		}
	}
	return out
}
