package main

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/oci"
)

// busyboxRef is the container image of the container scenarios, built
// from the host's static busybox and served by the bench registry.
const busyboxRef = "docker.io/bench/busybox:1"

func busyboxImage() (v1.Image, error) {
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return nil, fmt.Errorf("busybox-static is needed: %w", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	entries := []struct {
		h    tar.Header
		body []byte
	}{
		{tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755}, nil},
		{tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755}, bb},
		{tar.Header{Name: "bin/sh", Typeflag: tar.TypeSymlink, Linkname: "busybox"}, nil},
		{tar.Header{Name: "bin/sleep", Typeflag: tar.TypeSymlink, Linkname: "busybox"}, nil},
	}
	for _, e := range entries {
		e.h.Size = int64(len(e.body))
		if err := tw.WriteHeader(&e.h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, err
		}
	}
	tw.Close()
	b := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	return mutate.Config(img, v1.Config{Cmd: []string{"sh"}, Env: []string{"PATH=/bin"}})
}

// sleeperConfig is a busybox sleep as the kubelet asks for it in a
// BestEffort pod: its own PID namespace and the pod's network and IPC, the
// kubelet's masked and read-only /proc and /sys paths (which it always
// sends for a container that is not privileged: without them containerd
// masks nothing while husk applies the same defaults, 16 mounts more for
// runc on one side only), the least CPU shares and the OOM score of
// BestEffort.
func sleeperConfig(name string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: busyboxRef},
		Command:  []string{"sleep", "3600"},
		LogPath:  name + ".log",
		Linux: &runtimeapi.LinuxContainerConfig{
			Resources: &runtimeapi.LinuxContainerResources{CpuShares: 2, OomScoreAdj: 1000},
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{
					Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD,
				},
				MaskedPaths:   oci.DefaultMaskedPaths(),
				ReadonlyPaths: oci.DefaultReadonlyPaths(),
			},
		},
	}
}

// pullBusybox pulls the image of the container scenarios.
func pullBusybox(ctx context.Context, r *runtimeUnderTest) error {
	images := runtimeapi.NewImageServiceClient(r.conn)
	if _, err := images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: busyboxRef}}); err != nil {
		return fmt.Errorf("pull %s: %w", busyboxRef, err)
	}
	return nil
}

// Issue 15's targets of the container rows: create+start against
// containerd with runc on both sides, and with husk's default handler
// (crun on a node that has it); RemoveContainer, whether it comes long
// after the stop or straight after it (as critest and the kubelet's pod
// deletion do).
const (
	targetCreateStartRunc    = 0.6
	targetCreateStartDefault = 0.4
	targetRemove             = 1.0
)

// benchContainers times CreateContainer+StartContainer, StopContainer and
// RemoveContainer of busybox containers on every runtime at once, husk
// once with runc and once with its default handler (benchContainerLatency),
// then on each runtime the private memory per pod of what the runtime
// adds with o.pods pods of one container each (husk: infra, monitor and
// the daemon's growth; containerd: shim, pause and the daemon's growth).
func benchContainers(ctx context.Context, rts []*runtimeUnderTest, o options, rec sideRecord) error {
	var lanes []*containerLane
	for _, r := range rts {
		if r.side == "containerd" {
			// One set of samples, the reference of every husk row.
			lanes = append(lanes, &containerLane{r: r, rows: append([]string{"[runc]", "[husk default]"}, floorRows...)})
			continue
		}
		lanes = append(lanes, &containerLane{r: r, handler: "runc", rows: []string{"[runc]"}},
			&containerLane{r: r, rows: []string{"[husk default]"}})
		for _, h := range floorHandlers() {
			floor, err := newRuntimeFloor(h, filepath.Join(r.dir, "state"))
			if err != nil {
				return fmt.Errorf("%s floor: %w", h, err)
			}
			defer floor.close()
			lanes = append(lanes, &containerLane{r: r, handler: h, rows: []string{floorRow(h)}, floor: floor})
		}
	}
	if err := benchContainerLatency(ctx, lanes, o, rec); err != nil {
		return err
	}
	for _, r := range rts {
		err := benchContainerMemory(ctx, r, o, func(name, unit string, target float64, v ...float64) { rec(r.side, name, unit, target, v...) })
		if err != nil {
			return fmt.Errorf("%s: %w", r.side, err)
		}
	}
	return nil
}

// sideRecord adds samples to a row of one side.
type sideRecord func(side, name, unit string, target float64, v ...float64)

// containerLane is one runtime and handler of the container latency
// scenario: its pod and the containers it has running.
type containerLane struct {
	r       *runtimeUnderTest
	handler string
	rows    []string // the row suffixes its samples go to
	pod     *runtimeapi.PodSandboxConfig
	podID   string
	ids     []string
	// floor, on a runtime floor's lane, runs the containers huskd made.
	floor *runtimeFloor
}

// add records a sample of the lane under each of its rows.
func (l *containerLane) add(rec sideRecord, name string, v float64) {
	for _, row := range l.rows {
		if slices.Contains(floorRows, row) && name != "Create+StartContainer" {
			continue // the floors are of create+start only
		}
		t := 0.0
		switch name {
		case "Create+StartContainer":
			t = map[string]float64{"[runc]": targetCreateStartRunc, "[husk default]": targetCreateStartDefault}[row]
		case "RemoveContainer, later", "RemoveContainer, after stop":
			t = targetRemove
		}
		rec(l.r.side, name+" "+row, "ms", t, v)
	}
}

// eachLane runs step on every lane, in the order laneOrder gives round:
// each step of one runtime is timed next to the same step of the others,
// so that all see the same machine (it is shared, and its load moves by
// the minute), and each follows every other equally often.
func eachLane(lanes []*containerLane, round int, step func(l *containerLane) error) error {
	for _, k := range laneOrder(len(lanes), round) {
		l := lanes[k]
		if err := step(l); err != nil {
			return fmt.Errorf("%s %v: %w", l.r.side, l.rows, err)
		}
	}
	return nil
}

// benchContainerLatency times, in one pod per lane, o.n containers (after
// 3 warm-up ones) created and started, then all stopped, then all
// removed; then as many again, each removed straight after its stop.
// Every step is taken on all lanes in turn (eachLane).
func benchContainerLatency(ctx context.Context, lanes []*containerLane, o options, rec sideRecord) error {
	const warmup = 3
	for _, l := range lanes {
		fmt.Fprintf(os.Stderr, "husk-bench: %s: %d containers %v\n", l.r.side, 2*(o.n+warmup), l.rows)
		l.pod = l.r.podConfig("ctr"+l.handler, 0)
		resp, err := l.r.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: l.pod, RuntimeHandler: l.handler})
		if err != nil {
			return fmt.Errorf("%s: RunPodSandbox: %w", l.r.side, err)
		}
		l.podID = resp.PodSandboxId
		if l.r.side == "husk" && l.handler == "" {
			st, err := l.r.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: l.podID})
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "husk-bench: husk's default handler is %s\n", st.GetStatus().GetRuntimeHandler())
		}
	}
	next := 0
	createStart := func(i int) error {
		next++
		return eachLane(lanes, i, func(l *containerLane) error {
			t := time.Now()
			c, err := l.r.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: l.podID, Config: sleeperConfig(fmt.Sprintf("c%d", next)), SandboxConfig: l.pod})
			if err != nil {
				return fmt.Errorf("CreateContainer: %w", err)
			}
			l.ids = append(l.ids, c.ContainerId)
			if l.floor != nil {
				return l.floorRun(c.ContainerId, i >= warmup, rec)
			}
			if _, err := l.r.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
				return fmt.Errorf("StartContainer: %w", err)
			}
			if i >= warmup {
				l.add(rec, "Create+StartContainer", ms(time.Since(t)))
			}
			return nil
		})
	}
	stop := func(l *containerLane, i int) error {
		if l.floor != nil {
			return l.floor.remove(l.ids[i]) // untimed
		}
		t := time.Now()
		if _, err := l.r.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: l.ids[i], Timeout: 0}); err != nil {
			return fmt.Errorf("StopContainer: %w", err)
		}
		if i >= warmup {
			l.add(rec, "StopContainer (timeout 0)", ms(time.Since(t)))
		}
		return nil
	}
	remove := func(l *containerLane, i int, row string) error {
		t := time.Now()
		if _, err := l.r.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: l.ids[i]}); err != nil {
			return fmt.Errorf("RemoveContainer: %w", err)
		}
		if i >= warmup && l.floor == nil {
			l.add(rec, row, ms(time.Since(t)))
		}
		return nil
	}
	steps := []func(i int) error{
		// Created and started, then all stopped, then all removed.
		createStart,
		func(i int) error { return eachLane(lanes, i, func(l *containerLane) error { return stop(l, i) }) },
		func(i int) error {
			return eachLane(lanes, i, func(l *containerLane) error { return remove(l, i, "RemoveContainer, later") })
		},
	}
	for _, step := range steps {
		for i := range o.n + warmup {
			if err := step(i); err != nil {
				return err
			}
		}
	}
	for _, l := range lanes {
		l.ids = nil
	}
	for i := range o.n + warmup {
		if err := createStart(i); err != nil {
			return err
		}
	}
	// Each removed straight after its stop, as critest and the kubelet's
	// pod deletion do.
	for i := range o.n + warmup {
		err := eachLane(lanes, i, func(l *containerLane) error {
			t := time.Now()
			if err := stop(l, i); err != nil {
				return err
			}
			if err := remove(l, i, "RemoveContainer, after stop"); err != nil {
				return err
			}
			if i >= warmup && l.floor == nil {
				l.add(rec, "Stop+RemoveContainer", ms(time.Since(t)))
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	for _, l := range lanes {
		if _, err := l.r.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: l.podID}); err != nil {
			return err
		}
		if _, err := l.r.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: l.podID}); err != nil {
			return err
		}
	}
	return nil
}

// benchContainerMemory measures what the runtime adds per pod with o.pods
// pods of one container each.
func benchContainerMemory(ctx context.Context, r *runtimeUnderTest, o options, rec record) error {
	time.Sleep(500 * time.Millisecond)
	daemonBefore := privateKiB(r.daemon.Process.Pid)
	var pods []string
	for i := 0; i < o.pods; i++ {
		cfg := r.podConfig("cmem", i)
		resp, err := r.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			return fmt.Errorf("RunPodSandbox: %w", err)
		}
		pods = append(pods, resp.PodSandboxId)
		c, err := r.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: resp.PodSandboxId, Config: sleeperConfig("app"), SandboxConfig: cfg})
		if err != nil {
			return fmt.Errorf("CreateContainer: %w", err)
		}
		if _, err := r.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
			return fmt.Errorf("StartContainer: %w", err)
		}
	}
	time.Sleep(time.Second)
	pids, err := r.perPodProcesses(ctx, pods)
	if err != nil {
		return err
	}
	var total float64
	var counted int
	for _, pid := range pids {
		// The app containers' own processes are the same on both sides.
		if c := comm(pid); c == "sleep" {
			continue
		}
		total += privateKiB(pid)
		counted++
	}
	daemonAfter := privateKiB(r.daemon.Process.Pid)
	perPod := total/float64(len(pods)) + (daemonAfter-daemonBefore)/float64(len(pods))
	fmt.Fprintf(os.Stderr, "husk-bench: %s: %d per-pod processes with containers, %.0f KiB private in all; daemon %.0f -> %.0f KiB\n",
		r.side, counted, total, daemonBefore, daemonAfter)
	rec("per-pod memory, 1 container", "KiB", 0.5, perPod)
	if r.side == "husk" {
		for _, p := range pids {
			if comm(p) == "husk-monitor" {
				rec("monitor private memory", "KiB", 0, privateKiB(p))
			}
		}
	}
	for _, id := range pods {
		if _, err := r.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
			return err
		}
		if _, err := r.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
			return err
		}
	}
	return nil
}
