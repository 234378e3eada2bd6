package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// nodeParallel is how many pods the node scenario makes or removes at a
// time, as the kubelet's pod workers do on a node filling up.
const nodeParallel = 10

// Each polled call is timed nodeSamples times, or for nodeSampling when
// it is slow (containerd's ListPodSandboxStats takes seconds), but at
// least nodeMinSamples times: the cheap calls take many samples, their
// medians being a fraction of a millisecond.
const (
	nodeSamples    = 200
	nodeMinSamples = 10
	nodeSampling   = 15 * time.Second
)

// The rows of the node scenario, in the order they are printed. The
// targets are issue 15's.
var nodeRows = []struct {
	name, unit string
	target     float64 // ratio husk/containerd, 0 for none
	limit      float64 // absolute bound on husk's median, 0 for none
}{
	{"node: make all", "ms", 0.5, 0},
	{"node: daemon RSS", "KiB", 0.3, 0},
	{"node: daemon RssAnon", "KiB", 0, 0},
	{"node: daemon threads", "", 0, 0},
	{"node: runtime memory per pod", "KiB", 0.30, 0},
	{"node: ListPodSandbox", "ms", 0.5, 0},
	{"node: ListPodSandbox, answer only", "ms", 0.5, 0},
	{"node: ListContainers", "ms", 0.5, 0},
	{"node: ListContainers, answer only", "ms", 0.5, 0},
	{"node: ImageFsInfo", "ms", 0.5, 0},
	{"node: ListPodSandbox" + floorSuffix, "ms", 0, 0},
	{"node: ListPodSandbox, answer only" + floorSuffix, "ms", 0, 0},
	{"node: ListContainers" + floorSuffix, "ms", 0, 0},
	{"node: ListContainers, answer only" + floorSuffix, "ms", 0, 0},
	{"node: ImageFsInfo" + floorSuffix, "ms", 0, 0},
	{"node: ListContainerStats", "ms", 0.2, 0},
	{"node: ListPodSandboxStats", "ms", 0, 20},
	{"node: ListPodSandboxMetrics", "ms", 0, 0},
	{"node: remove all", "ms", 0.5, 0},
}

type nodeRecord func(side, name string, v ...float64)

// benchNodes is issue 15's full node, on each runtime: o.nodePods pods of
// one busybox container each, made nodeParallel at a time, one runtime
// after the other; then each daemon's RSS, the runtime's private memory
// per pod (husk: infra, monitor and the daemon's growth; containerd: shim,
// pause and the daemon's growth), and the calls the kubelet polls on
// such a node, each timed many times, a call to one runtime then the same
// call to the other (the first of each pair alternating), so that both
// see the same machine: this one is shared and its load moves by the
// minute; then all pods stopped and removed, nodeParallel at a time. Each
// pod has a cgroup of its own, as the kubelet gives it (containerd 1.6's
// ListPodSandboxStats fails without one). A call a runtime does not serve
// (containerd 1.6 has no ListPodSandboxMetrics) is left out of its column.
func benchNodes(ctx context.Context, rts []*runtimeUnderTest, o options, rec nodeRecord) error {
	pods := map[*runtimeUnderTest][]string{}
	for _, r := range rts {
		fmt.Fprintf(os.Stderr, "husk-bench: %s: node of %d pods\n", r.side, o.nodePods)
		time.Sleep(500 * time.Millisecond)
		daemonBefore := privateKiB(r.daemon.Process.Pid)
		start := time.Now()
		p, err := r.makePods(ctx, o.nodePods)
		if err != nil {
			return fmt.Errorf("%s: %w", r.side, err)
		}
		pods[r] = p
		rec(r.side, "node: make all", ms(time.Since(start)))
		time.Sleep(time.Second)
		rec(r.side, "node: daemon RSS", statusField(r.daemon.Process.Pid, "VmRSS:"))
		// RSS counts the pages of the binary it has touched (RssFile);
		// RssAnon is what it allocated.
		rec(r.side, "node: daemon RssAnon", statusField(r.daemon.Process.Pid, "RssAnon:"))
		// Each thread blocked in a system call holds its own stack.
		rec(r.side, "node: daemon threads", statusField(r.daemon.Process.Pid, "Threads:"))
		if err := r.saveProfile(o, "heap", "heap.pb.gz"); err != nil {
			return err
		}
		// The text form ends with the runtime's MemStats: where RssAnon goes.
		if err := r.saveProfile(o, "heap?debug=1", "heap.txt"); err != nil {
			return err
		}
		// Goroutine stacks are part of RssAnon too.
		if err := r.saveProfile(o, "goroutine?debug=1", "goroutine.txt"); err != nil {
			return err
		}
		perPod, err := r.memoryPerPod(ctx, p, daemonBefore)
		if err != nil {
			return fmt.Errorf("%s: %w", r.side, err)
		}
		rec(r.side, "node: runtime memory per pod", perPod)
	}
	if err := timePolledCalls(ctx, rts, o.nodePods, rec); err != nil {
		return err
	}
	if err := timeZeroWork(ctx, rts, o.nodePods, rec); err != nil {
		return err
	}
	for _, r := range rts {
		if err := r.profileRelist(ctx, o); err != nil {
			return err
		}
		start := time.Now()
		if err := r.removePods(ctx, pods[r]); err != nil {
			if r.side == "husk" {
				return fmt.Errorf("%s: %w", r.side, err)
			}
			// Seen once: containerd could not unlink its netns files
			// after another process bound /run/netns over itself.
			fmt.Fprintf(os.Stderr, "husk-bench: %s: node: remove all: %v (left out)\n", r.side, err)
			continue
		}
		rec(r.side, "node: remove all", ms(time.Since(start)))
	}
	return nil
}

// makePods runs n pods of one sleeping busybox container each, nodeParallel
// at a time, and returns their IDs.
func (r *runtimeUnderTest) makePods(ctx context.Context, n int) ([]string, error) {
	pods := make([]string, n)
	return pods, parallel(n, func(i int) error {
		cfg := r.podConfig("node", i)
		// A cgroup of its own, as the kubelet gives every pod.
		cfg.Linux.CgroupParent = fmt.Sprintf("/%s/pod%d", nodeCgroup(r.side), i)
		ctr := sleeperConfig("app")
		kubeletMetadata(cfg, ctr)
		resp, err := r.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			return fmt.Errorf("RunPodSandbox: %w", err)
		}
		pods[i] = resp.PodSandboxId
		c, err := r.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: resp.PodSandboxId, Config: ctr, SandboxConfig: cfg})
		if err != nil {
			return fmt.Errorf("CreateContainer: %w", err)
		}
		if _, err := r.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
			return fmt.Errorf("StartContainer: %w", err)
		}
		return nil
	})
}

// kubeletMetadata gives a pod and its container the labels and
// annotations the kubelet gives them, which the lists the kubelet polls
// carry back.
func kubeletMetadata(pod *runtimeapi.PodSandboxConfig, ctr *runtimeapi.ContainerConfig) {
	md := pod.GetMetadata()
	pod.Labels["io.kubernetes.pod.name"] = md.GetName()
	pod.Labels["io.kubernetes.pod.uid"] = md.GetUid()
	pod.Annotations = map[string]string{"kubernetes.io/config.seen": "2026-12-02T06:00:00.000000000Z", "kubernetes.io/config.source": "api"}
	ctr.Labels = map[string]string{"io.kubernetes.container.name": ctr.GetMetadata().GetName(), "io.kubernetes.pod.name": md.GetName(),
		"io.kubernetes.pod.namespace": md.GetNamespace(), "io.kubernetes.pod.uid": md.GetUid()}
	ctr.Annotations = map[string]string{"io.kubernetes.container.hash": "6f8c1a2b", "io.kubernetes.container.restartCount": "0",
		"io.kubernetes.container.terminationMessagePath":   "/dev/termination-log",
		"io.kubernetes.container.terminationMessagePolicy": "File", "io.kubernetes.pod.terminationGracePeriod": "30"}
}

// nodeCgroup is the parent of the node scenario's pod cgroups, this
// run's own.
func nodeCgroup(side string) string { return "hbench-node-" + side + runTag }

// removePods stops and removes the pods, nodeParallel at a time.
func (r *runtimeUnderTest) removePods(ctx context.Context, pods []string) error {
	return parallel(len(pods), func(i int) error {
		if _, err := r.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pods[i]}); err != nil {
			return fmt.Errorf("StopPodSandbox: %w", err)
		}
		if _, err := r.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pods[i]}); err != nil {
			return fmt.Errorf("RemovePodSandbox: %w", err)
		}
		return nil
	})
}

// parallel runs f(0..n-1), nodeParallel at a time, and returns the first
// error.
func parallel(n int, f func(i int) error) error {
	sem := make(chan struct{}, nodeParallel)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = f(i)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// memoryPerPod is the private memory the runtime adds per pod: its per-pod
// processes (not the app containers' own, the same on both sides) and the
// daemon's growth since daemonBefore, divided by the pods.
func (r *runtimeUnderTest) memoryPerPod(ctx context.Context, pods []string, daemonBefore float64) (float64, error) {
	pids, err := r.perPodProcesses(ctx, pods)
	if err != nil {
		return 0, err
	}
	var total float64
	for _, pid := range pids {
		if comm(pid) != "sleep" {
			total += privateKiB(pid)
		}
	}
	daemonAfter := privateKiB(r.daemon.Process.Pid)
	fmt.Fprintf(os.Stderr, "husk-bench: %s: node: %d per-pod processes, %.0f KiB private in all; daemon %.0f -> %.0f KiB\n",
		r.side, len(pids), total, daemonBefore, daemonAfter)
	return (total + daemonAfter - daemonBefore) / float64(len(pods)), nil
}

// polledCall is one of the calls the kubelet polls, against one runtime;
// it returns the number of items (-1 when not counted) and how long the
// call took.
type polledCall struct {
	name string
	call func(r *runtimeUnderTest) (int, time.Duration, error)
}

// timed times a call that returns its number of items.
func timed(f func() (int, error)) (int, time.Duration, error) {
	t := time.Now()
	n, err := f()
	return n, time.Since(t), err
}

// polledCalls are the calls the kubelet polls on a full node: PLEG's relist
// every second, the stats and image filesystem every housekeeping period.
// The lists are timed twice: as the kubelet gets them, decoded, and for
// the runtime's part alone: the call until its answer's bytes are in,
// which the client then decodes (the same work whoever answered, and most
// of the call on both sides), untimed (rawAnswer).
func polledCalls(ctx context.Context) []polledCall {
	// The size of each list's answer, said once per runtime: what the
	// client decodes.
	said := map[string]bool{}
	var mu sync.Mutex
	size := func(r *runtimeUnderTest, name string, m proto.Message) {
		mu.Lock()
		defer mu.Unlock()
		if !said[r.side+name] {
			said[r.side+name] = true
			fmt.Fprintf(os.Stderr, "husk-bench: %s: node: %s answers %d bytes\n", r.side, name, proto.Size(m))
		}
	}
	return []polledCall{
		{"node: ListPodSandbox", func(r *runtimeUnderTest) (int, time.Duration, error) {
			return timed(func() (int, error) {
				resp, err := r.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
				size(r, "ListPodSandbox", resp)
				return len(resp.GetItems()), err
			})
		}},
		{"node: ListPodSandbox, answer only", func(r *runtimeUnderTest) (int, time.Duration, error) {
			var resp runtimeapi.ListPodSandboxResponse
			d, err := rawAnswer(ctx, r, "ListPodSandbox", &runtimeapi.ListPodSandboxRequest{}, &resp)
			return len(resp.GetItems()), d, err
		}},
		{"node: ListContainers", func(r *runtimeUnderTest) (int, time.Duration, error) {
			return timed(func() (int, error) {
				resp, err := r.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
				size(r, "ListContainers", resp)
				return len(resp.GetContainers()), err
			})
		}},
		{"node: ListContainers, answer only", func(r *runtimeUnderTest) (int, time.Duration, error) {
			var resp runtimeapi.ListContainersResponse
			d, err := rawAnswer(ctx, r, "ListContainers", &runtimeapi.ListContainersRequest{}, &resp)
			return len(resp.GetContainers()), d, err
		}},
		{"node: ImageFsInfo", func(r *runtimeUnderTest) (int, time.Duration, error) {
			return timed(func() (int, error) {
				_, err := runtimeapi.NewImageServiceClient(r.conn).ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
				return -1, err
			})
		}},
		{"node: ListContainerStats", func(r *runtimeUnderTest) (int, time.Duration, error) {
			return timed(func() (int, error) {
				resp, err := r.rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{})
				return len(resp.GetStats()), err
			})
		}},
		{"node: ListPodSandboxStats", func(r *runtimeUnderTest) (int, time.Duration, error) {
			return timed(func() (int, error) {
				resp, err := r.rt.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{})
				return len(resp.GetStats()), err
			})
		}},
		{"node: ListPodSandboxMetrics", func(r *runtimeUnderTest) (int, time.Duration, error) {
			return timed(func() (int, error) {
				resp, err := r.rt.ListPodSandboxMetrics(ctx, &runtimeapi.ListPodSandboxMetricsRequest{})
				return len(resp.GetPodMetrics()), err
			})
		}},
	}
}

// rawCodec hands a call's answer over as its bytes, undecoded.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return proto.Marshal(v.(proto.Message)) }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// rawAnswer calls the RuntimeService's method and times it until the
// answer's bytes are in; it decodes them into resp after, untimed.
func rawAnswer(ctx context.Context, r *runtimeUnderTest, method string, req, resp proto.Message) (time.Duration, error) {
	var raw []byte
	t := time.Now()
	err := r.conn.Invoke(ctx, "/runtime.v1.RuntimeService/"+method, req, &raw, grpc.ForceCodec(rawCodec{}))
	d := time.Since(t)
	if err != nil {
		return d, err
	}
	return d, proto.Unmarshal(raw, resp)
}

// timePolledCalls times each polled call on every runtime, paired: round
// by round, the call to one runtime then to the next, the first of each
// round changing, each answer checked to hold every pod. A call is timed
// nodeSamples times, or for nodeSampling when slow, but at least
// nodeMinSamples times; the first round warms caches up and is not
// counted. A call containerd does not serve is left out of its column.
func timePolledCalls(ctx context.Context, rts []*runtimeUnderTest, pods int, rec nodeRecord) error {
	return timeCalls(ctx, polledCalls(ctx), rts, pods, rec)
}

// timeCalls times calls on every runtime of rts, as timePolledCalls says.
func timeCalls(ctx context.Context, calls []polledCall, rts []*runtimeUnderTest, pods int, rec nodeRecord) error {
	for _, c := range calls {
		active := slices.Clone(rts)
		start := time.Now()
		for i := 0; i <= nodeSamples && len(active) > 0; i++ {
			if i > nodeMinSamples && time.Since(start) > nodeSampling {
				break
			}
			order := slices.Clone(active)
			if i%2 == 1 {
				slices.Reverse(order)
			}
			for _, r := range order {
				n, d, err := c.call(r)
				if err != nil {
					if i == 0 && r.side == "containerd" {
						fmt.Fprintf(os.Stderr, "husk-bench: %s: %s: %v (left out)\n", r.side, c.name, err)
						active = slices.DeleteFunc(active, func(x *runtimeUnderTest) bool { return x == r })
						continue
					}
					return fmt.Errorf("%s: %s: %w", r.side, c.name, err)
				}
				if n >= 0 && n < pods {
					return fmt.Errorf("%s: %s: %d items, want at least %d", r.side, c.name, n, pods)
				}
				if i > 0 {
					rec(r.side, c.name, ms(d))
				}
			}
		}
	}
	return nil
}

// saveProfile writes huskd's pprof profile name (-profile) as
// <dir>/husk-<file>.
func (r *runtimeUnderTest) saveProfile(o options, name, file string) error {
	if r.pprof == "" {
		return nil
	}
	return fetchTo("http://"+r.pprof+"/debug/pprof/"+name, filepath.Join(o.profile, "husk-"+file))
}

// profileRelist writes huskd's CPU profiles (-profile) of 10 s of the
// kubelet's relists (ListPodSandbox and ListContainers, cpu.pb.gz), then of
// 10 s of its stats calls (ListPodSandboxStats and ListContainerStats,
// stats-cpu.pb.gz).
func (r *runtimeUnderTest) profileRelist(ctx context.Context, o options) error {
	if r.pprof == "" {
		return nil
	}
	if err := r.profileCalls(ctx, o, "cpu.pb.gz", func() error {
		if _, err := r.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err != nil {
			return err
		}
		_, err := r.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
		return err
	}); err != nil {
		return err
	}
	return r.profileCalls(ctx, o, "stats-cpu.pb.gz", func() error {
		if _, err := r.rt.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{}); err != nil {
			return err
		}
		_, err := r.rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{})
		return err
	})
}

// profileCalls makes calls over and over while huskd's CPU profile of 10 s
// is taken into file.
func (r *runtimeUnderTest) profileCalls(ctx context.Context, o options, file string, calls func() error) error {
	done := make(chan error, 1)
	go func() { done <- r.saveProfile(o, "profile?seconds=10", file) }()
	for {
		select {
		case err := <-done:
			return err
		default:
		}
		if err := calls(); err != nil {
			return err
		}
	}
}

// fetchTo writes what GET url answers to path.
func fetchTo(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	fmt.Fprintf(os.Stderr, "husk-bench: wrote %s\n", path)
	return f.Close()
}
