//go:build chaos

package e2e

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// envInt is the integer in the environment variable, else def.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// loadCall is one kind of request the load mixes, with its weight.
type loadCall struct {
	name   string
	weight int
	run    func(ctx context.Context, c *loadClient) error
}

// loadClient is one client of the load: its own connection, as separate
// kubelets, crictl and monitoring agents would have.
type loadClient struct {
	rt     runtimeapi.RuntimeServiceClient
	images runtimeapi.ImageServiceClient
	rnd    *rand.Rand
	pods   []loadPod
	n      int // churn containers made, for unique names
	id     int
}

type loadPod struct {
	id, ctr string
	config  *runtimeapi.PodSandboxConfig
}

func (c *loadClient) pod() loadPod { return c.pods[c.rnd.IntN(len(c.pods))] }

// loadCalls: reads of every kind, ExecSync, and a container's whole life
// (create, start, exec, stop, remove) in one of the pods.
var loadCalls = []loadCall{
	{"PodSandboxStatus", 10, func(ctx context.Context, c *loadClient) error {
		_, err := c.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: c.pod().id, Verbose: true})
		return err
	}},
	{"ContainerStatus", 10, func(ctx context.Context, c *loadClient) error {
		_, err := c.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: c.pod().ctr, Verbose: true})
		return err
	}},
	{"ListPodSandbox", 5, func(ctx context.Context, c *loadClient) error {
		_, err := c.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
		return err
	}},
	{"ListContainers", 5, func(ctx context.Context, c *loadClient) error {
		_, err := c.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
		return err
	}},
	{"ContainerStats", 5, func(ctx context.Context, c *loadClient) error {
		_, err := c.rt.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: c.pod().ctr})
		return err
	}},
	{"ListContainerStats", 2, func(ctx context.Context, c *loadClient) error {
		_, err := c.rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{})
		return err
	}},
	{"PodSandboxStats", 5, func(ctx context.Context, c *loadClient) error {
		_, err := c.rt.PodSandboxStats(ctx, &runtimeapi.PodSandboxStatsRequest{PodSandboxId: c.pod().id})
		return err
	}},
	{"ListPodSandboxStats", 2, func(ctx context.Context, c *loadClient) error {
		_, err := c.rt.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{})
		return err
	}},
	{"ExecSync", 5, func(ctx context.Context, c *loadClient) error {
		resp, err := c.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: c.pod().ctr, Cmd: []string{"echo", "load"}, Timeout: 30})
		if err == nil && (resp.ExitCode != 0 || string(resp.Stdout) != "load\n") {
			err = fmt.Errorf("ExecSync: exit %d, stdout %q, stderr %q", resp.ExitCode, resp.Stdout, resp.Stderr)
		}
		return err
	}},
	{"Status", 2, func(ctx context.Context, c *loadClient) error {
		_, err := c.rt.Status(ctx, &runtimeapi.StatusRequest{})
		return err
	}},
	{"Version", 2, func(ctx context.Context, c *loadClient) error {
		_, err := c.rt.Version(ctx, &runtimeapi.VersionRequest{})
		return err
	}},
	{"ImageStatus", 2, func(ctx context.Context, c *loadClient) error {
		_, err := c.images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "busybox:e2e"}})
		return err
	}},
	{"ListImages", 1, func(ctx context.Context, c *loadClient) error {
		_, err := c.images.ListImages(ctx, &runtimeapi.ListImagesRequest{})
		return err
	}},
	{"ImageFsInfo", 1, func(ctx context.Context, c *loadClient) error {
		_, err := c.images.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
		return err
	}},
	{"ContainerLife", 1, func(ctx context.Context, c *loadClient) error {
		p := c.pod()
		c.n++
		cfg := ctrConfig(fmt.Sprintf("churn-%d-%d", c.id, c.n), "sleep", "3600")
		created, err := c.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: p.id, Config: cfg, SandboxConfig: p.config})
		if err != nil {
			return fmt.Errorf("create: %w", err)
		}
		id := created.ContainerId
		steps := []func() error{
			func() error {
				_, err := c.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id})
				return err
			},
			func() error {
				_, err := c.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"true"}, Timeout: 30})
				return err
			},
			func() error {
				_, err := c.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id})
				return err
			},
			func() error {
				_, err := c.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id})
				return err
			},
		}
		for i, step := range steps {
			if err := step(); err != nil {
				return fmt.Errorf("container %s, step %d: %w", id, i+1, err)
			}
		}
		return nil
	}},
}

// huskdFigures are what huskd holds: goroutines (pprof), threads and fds
// (/proc).
type huskdFigures struct{ goroutines, threads, fds int }

func (f huskdFigures) String() string {
	return fmt.Sprintf("%d goroutines, %d threads, %d fds", f.goroutines, f.threads, f.fds)
}

func (e *env) huskdFigures(t *testing.T, pprofAddr string) huskdFigures {
	t.Helper()
	e.mu.Lock()
	pid := e.daemon.Process.Pid
	e.mu.Unlock()
	resp, err := http.Get("http://" + pprofAddr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var f huskdFigures
	if _, err := fmt.Sscanf(string(b), "goroutine profile: total %d", &f.goroutines); err != nil {
		t.Fatalf("goroutine profile: %v: %.100q", err, b)
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	f.fds = len(fds)
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			f.threads, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return f
}

// TestChaosLoad: 50 clients, each on its own connection, mix CRI calls for
// 60 s on a node with 50 pods, each running a busybox container: reads of
// every kind, stats, ExecSync, and containers created, started, exec'd,
// stopped and removed. No call may fail, and once the clients are gone
// huskd holds no more goroutines or fds than before the load. The figures
// (requests, p50/p99 per RPC, goroutines, threads, fds) are logged.
// HUSK_LOAD_PODS, HUSK_LOAD_CLIENTS and HUSK_LOAD_SECONDS change the size.
func TestChaosLoad(t *testing.T) {
	pods, clients := envInt("HUSK_LOAD_PODS", 50), envInt("HUSK_LOAD_CLIENTS", 50)
	duration := time.Duration(envInt("HUSK_LOAD_SECONDS", 60)) * time.Second
	e := containerEnvWith(t, withRootConfig("log_format = \"json\"\n"), withConfig("[debug]\naddress = \"127.0.0.1:0\"\n"))
	pprofAddr := fmt.Sprint(e.waitLogged(t, map[string]any{"msg": "pprof serving"})["address"])

	start := time.Now()
	node := e.startLoadPods(t, pods)
	t.Logf("%d pods with a running container each, made in %s", pods, time.Since(start).Round(time.Millisecond))
	// A node in use has had every kind of call: what huskd opens on the
	// first (the stats keep the pods' cgroup files open) is not growth.
	e.warmUp(t, node)
	before := e.settledFigures(t, pprofAddr, huskdFigures{})
	t.Logf("before the load: %s", before)

	stats := e.runLoad(t, node, clients, duration)
	stats.report(t, duration)

	after := e.settledFigures(t, pprofAddr, before)
	t.Logf("after the load: %s", after)
	if after.goroutines > before.goroutines || after.fds > before.fds {
		t.Errorf("huskd grew under the load: before %s, after %s; its fds:\n%s", before, after, e.huskdFDs())
	}
	var ids []string
	for _, p := range node {
		e.stopRemove(p.id)
		ids = append(ids, p.id)
	}
	e.assertNoLeaks(ids...)
}

// huskdFDs counts huskd's fds by what they point to (the first four path
// elements), most first.
func (e *env) huskdFDs() string {
	e.mu.Lock()
	pid := e.daemon.Process.Pid
	e.mu.Unlock()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, _ := os.ReadDir(dir)
	count := map[string]int{}
	for _, fd := range fds {
		target, err := os.Readlink(dir + "/" + fd.Name())
		if err != nil {
			continue
		}
		if parts := strings.SplitN(target, "/", 6); len(parts) > 5 {
			target = strings.Join(parts[:5], "/") + "/..."
		}
		count[target]++
	}
	var lines []string
	for target, n := range count {
		lines = append(lines, fmt.Sprintf("%6d %s", n, target))
	}
	sort.Sort(sort.Reverse(sort.StringSlice(lines)))
	return strings.Join(lines[:min(len(lines), 15)], "\n")
}

// warmUp makes each kind of call once, for every pod where it names one.
func (e *env) warmUp(t *testing.T, node []loadPod) {
	t.Helper()
	for _, call := range loadCalls {
		for i := range node {
			c := &loadClient{rt: e.rt, images: runtimeapi.NewImageServiceClient(e.conn), rnd: rand.New(rand.NewPCG(1, 1)),
				pods: node[i : i+1], id: -1, n: i}
			if err := call.run(e.ctx(), c); err != nil {
				t.Fatalf("warm-up %s: %v", call.name, err)
			}
			if call.name == "ContainerLife" {
				break
			}
		}
	}
}

// startLoadPods runs n pods with one running container each, ten at a
// time.
func (e *env) startLoadPods(t *testing.T, n int) []loadPod {
	t.Helper()
	out := make([]loadPod, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, 10)
	var wg sync.WaitGroup
	for i := range out {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			ctx := e.ctx()
			cfg := e.podConfig(fmt.Sprintf("load%d", i))
			pod, err := e.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
			if err != nil {
				errs <- fmt.Errorf("RunPodSandbox %d: %w", i, err)
				return
			}
			ctr, err := e.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: pod.PodSandboxId,
				Config: ctrConfig("main", "sleep", "3600"), SandboxConfig: cfg})
			if err == nil {
				_, err = e.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ctr.ContainerId})
			}
			if err != nil {
				errs <- fmt.Errorf("pod %d's container: %w", i, err)
				return
			}
			out[i] = loadPod{id: pod.PodSandboxId, ctr: ctr.ContainerId, config: cfg}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("%v\n%s", err, e.logs())
	}
	return out
}

// settledFigures waits (up to 30 s) for huskd's goroutines and fds to come
// down to those of ref (none for a zero ref: until they stop falling),
// then returns them.
func (e *env) settledFigures(t *testing.T, pprofAddr string, ref huskdFigures) huskdFigures {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	last := e.huskdFigures(t, pprofAddr)
	for time.Now().Before(deadline) {
		time.Sleep(time.Second)
		f := e.huskdFigures(t, pprofAddr)
		if ref != (huskdFigures{}) && f.goroutines <= ref.goroutines && f.fds <= ref.fds {
			return f
		}
		if ref == (huskdFigures{}) && f.goroutines >= last.goroutines && f.fds >= last.fds {
			return f
		}
		last = f
	}
	return last
}

// loadStats are the latencies and errors of each kind of call.
type loadStats struct {
	mu        sync.Mutex
	latencies map[string][]time.Duration
	errors    map[string][]string
}

func (s *loadStats) add(name string, d time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latencies[name] = append(s.latencies[name], d)
	if err != nil {
		s.errors[name] = append(s.errors[name], err.Error())
	}
}

// runLoad runs the clients until the duration has passed.
func (e *env) runLoad(t *testing.T, node []loadPod, clients int, duration time.Duration) *loadStats {
	t.Helper()
	stats := &loadStats{latencies: map[string][]time.Duration{}, errors: map[string][]string{}}
	total := 0
	for _, c := range loadCalls {
		total += c.weight
	}
	end := time.Now().Add(duration)
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		conn, err := grpc.NewClient("unix://"+e.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		c := &loadClient{rt: runtimeapi.NewRuntimeServiceClient(conn), images: runtimeapi.NewImageServiceClient(conn),
			rnd: rand.New(rand.NewPCG(uint64(i), 7)), pods: node, id: i}
		wg.Go(func() {
			defer conn.Close()
			for time.Now().Before(end) {
				call := pickCall(c.rnd.IntN(total))
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				start := time.Now()
				err := call.run(ctx, c)
				stats.add(call.name, time.Since(start), err)
				cancel()
			}
		})
	}
	wg.Wait()
	return stats
}

func pickCall(n int) loadCall {
	for _, c := range loadCalls {
		if n < c.weight {
			return c
		}
		n -= c.weight
	}
	return loadCalls[len(loadCalls)-1]
}

// report logs requests, errors and p50/p99 per kind of call, and fails
// the test on any error.
func (s *loadStats) report(t *testing.T, duration time.Duration) {
	t.Helper()
	var names []string
	total, failed := 0, 0
	for name := range s.latencies {
		names = append(names, name)
	}
	sort.Strings(names)
	var b strings.Builder
	fmt.Fprintf(&b, "%-20s %8s %6s %10s %10s %10s\n", "call", "requests", "errors", "p50", "p99", "max")
	for _, name := range names {
		l := s.latencies[name]
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
		total += len(l)
		failed += len(s.errors[name])
		fmt.Fprintf(&b, "%-20s %8d %6d %10s %10s %10s\n", name, len(l), len(s.errors[name]),
			l[len(l)/2].Round(10*time.Microsecond), l[len(l)*99/100].Round(10*time.Microsecond), l[len(l)-1].Round(10*time.Microsecond))
	}
	t.Logf("load: %d requests in %s (%.0f/s), %d errors\n%s", total, duration, float64(total)/duration.Seconds(), failed, b.String())
	for name, errs := range s.errors {
		t.Errorf("%s: %d errors, the first: %s", name, len(errs), errs[0])
	}
}
