package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

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
	{"node: runtime memory per pod", "KiB", 0.30, 0},
	{"node: ListPodSandbox", "ms", 0.5, 0},
	{"node: ListContainers", "ms", 0.5, 0},
	{"node: ImageFsInfo", "ms", 0.5, 0},
	{"node: ListContainerStats", "ms", 0.2, 0},
	{"node: ListPodSandboxStats", "ms", 0, 20},
	{"node: ListPodSandboxMetrics", "ms", 0, 0},
	{"node: remove all", "ms", 0.5, 0},
}

type nodeRecord func(name string, v ...float64)

// benchNode is issue 15's full node: o.nodePods pods of one busybox
// container each, made nodeParallel at a time; then the daemon's RSS, the
// runtime's private memory per pod (husk: infra, monitor and the daemon's
// growth; containerd: shim, pause and the daemon's growth), and the calls
// the kubelet polls on such a node, each timed many times; then all
// pods stopped and removed, nodeParallel at a time. Each pod has a cgroup
// of its own, as the kubelet gives it (containerd 1.6's ListPodSandboxStats
// fails without one). A call the runtime does not serve (containerd 1.6 has
// no ListPodSandboxMetrics) is left out of its column.
func benchNode(ctx context.Context, r *runtimeUnderTest, o options, rec nodeRecord) error {
	fmt.Fprintf(os.Stderr, "husk-bench: %s: node of %d pods\n", r.side, o.nodePods)
	time.Sleep(500 * time.Millisecond)
	daemonBefore := privateKiB(r.daemon.Process.Pid)
	start := time.Now()
	pods, err := r.makePods(ctx, o.nodePods)
	if err != nil {
		return err
	}
	rec("node: make all", ms(time.Since(start)))
	time.Sleep(time.Second)
	rec("node: daemon RSS", statusField(r.daemon.Process.Pid, "VmRSS:"))
	perPod, err := r.memoryPerPod(ctx, pods, daemonBefore)
	if err != nil {
		return err
	}
	rec("node: runtime memory per pod", perPod)
	if err := r.timePolledCalls(ctx, len(pods), rec); err != nil {
		return err
	}
	start = time.Now()
	if err := r.removePods(ctx, pods); err != nil {
		return err
	}
	rec("node: remove all", ms(time.Since(start)))
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
		resp, err := r.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			return fmt.Errorf("RunPodSandbox: %w", err)
		}
		pods[i] = resp.PodSandboxId
		c, err := r.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: resp.PodSandboxId, Config: sleeperConfig("app"), SandboxConfig: cfg})
		if err != nil {
			return fmt.Errorf("CreateContainer: %w", err)
		}
		if _, err := r.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
			return fmt.Errorf("StartContainer: %w", err)
		}
		return nil
	})
}

// nodeCgroup is the parent of the node scenario's pod cgroups; the
// bench's PID keeps two benches on one machine out of each other's
// cgroups (each removes its own at the end).
func nodeCgroup(side string) string { return fmt.Sprintf("hbench-node-%s-%d", side, os.Getpid()) }

// huskCgroup is huskd's cgroup_parent in the bench.
func huskCgroup() string { return fmt.Sprintf("hbench-husk-%d", os.Getpid()) }

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

// timePolledCalls times the calls the kubelet polls on a full node (PLEG's
// relist every second, the stats and image filesystem every housekeeping
// period), each checked to see every pod.
func (r *runtimeUnderTest) timePolledCalls(ctx context.Context, pods int, rec nodeRecord) error {
	images := runtimeapi.NewImageServiceClient(r.conn)
	calls := []struct {
		name string
		call func() (int, error) // the number of items, -1 when not counted
	}{
		{"node: ListPodSandbox", func() (int, error) {
			resp, err := r.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
			return len(resp.GetItems()), err
		}},
		{"node: ListContainers", func() (int, error) {
			resp, err := r.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
			return len(resp.GetContainers()), err
		}},
		{"node: ImageFsInfo", func() (int, error) {
			_, err := images.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
			return -1, err
		}},
		{"node: ListContainerStats", func() (int, error) {
			resp, err := r.rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{})
			return len(resp.GetStats()), err
		}},
		{"node: ListPodSandboxStats", func() (int, error) {
			resp, err := r.rt.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{})
			return len(resp.GetStats()), err
		}},
		{"node: ListPodSandboxMetrics", func() (int, error) {
			resp, err := r.rt.ListPodSandboxMetrics(ctx, &runtimeapi.ListPodSandboxMetricsRequest{})
			return len(resp.GetPodMetrics()), err
		}},
	}
	for _, c := range calls {
		start := time.Now()
		for i := range nodeSamples + 1 {
			if i > nodeMinSamples && time.Since(start) > nodeSampling {
				break
			}
			t := time.Now()
			n, err := c.call()
			d := time.Since(t)
			if err != nil {
				if i == 0 && r.side == "containerd" {
					fmt.Fprintf(os.Stderr, "husk-bench: %s: %s: %v (left out)\n", r.side, c.name, err)
					break
				}
				return fmt.Errorf("%s: %w", c.name, err)
			}
			if n >= 0 && n < pods {
				return fmt.Errorf("%s: %d items, want at least %d", c.name, n, pods)
			}
			if i > 0 { // the first call warms caches up
				rec(c.name, ms(d))
			}
		}
	}
	return nil
}
