package main

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
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

func sleeperConfig(name string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: busyboxRef},
		Command:  []string{"sleep", "3600"},
		LogPath:  name + ".log",
		Linux:    &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{}, SecurityContext: &runtimeapi.LinuxContainerSecurityContext{}},
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
// RemoveContainer of busybox containers in one ready pod, husk once with
// runc and once with its default handler, then the private memory per pod
// of what the runtime adds with o.pods pods of one container each (husk:
// infra, monitor and the daemon's growth; containerd: shim, pause and the
// daemon's growth).
func benchContainers(ctx context.Context, r *runtimeUnderTest, o options, rec record) error {
	if r.side == "containerd" {
		// One set of samples, the reference of both husk rows.
		if err := benchContainerLatency(ctx, r, o, "", []string{"[runc]", "[husk default]"}, rec); err != nil {
			return err
		}
	} else {
		if err := benchContainerLatency(ctx, r, o, "runc", []string{"[runc]"}, rec); err != nil {
			return err
		}
		if err := benchContainerLatency(ctx, r, o, "", []string{"[husk default]"}, rec); err != nil {
			return err
		}
	}
	return benchContainerMemory(ctx, r, o, rec)
}

// benchContainerLatency times, in one pod of the handler, o.n containers
// (after 3 warm-up ones) created and started, then all stopped, then all
// removed; then as many again, each removed straight after its stop. The
// samples go to each row suffix.
func benchContainerLatency(ctx context.Context, r *runtimeUnderTest, o options, handler string, rows []string, rec record) error {
	fmt.Fprintf(os.Stderr, "husk-bench: %s: %d containers %v\n", r.side, 2*o.n, rows)
	add := func(name, unit string, target float64, v float64) {
		for _, row := range rows {
			t := target
			if name == "Create+StartContainer" {
				t = map[string]float64{"[runc]": targetCreateStartRunc, "[husk default]": targetCreateStartDefault}[row]
			}
			rec(name+" "+row, unit, t, v)
		}
	}
	pod := r.podConfig("ctr"+handler, 0)
	resp, err := r.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod, RuntimeHandler: handler})
	if err != nil {
		return fmt.Errorf("RunPodSandbox: %w", err)
	}
	podID := resp.PodSandboxId
	if r.side == "husk" && handler == "" {
		st, err := r.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID})
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "husk-bench: husk's default handler is %s\n", st.GetStatus().GetRuntimeHandler())
	}
	const warmup = 3
	next := 0
	createStart := func() ([]string, error) {
		var ids []string
		for i := 0; i < o.n+warmup; i++ {
			t := time.Now()
			c, err := r.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: sleeperConfig(fmt.Sprintf("c%d", next)), SandboxConfig: pod})
			next++
			if err != nil {
				return nil, fmt.Errorf("CreateContainer: %w", err)
			}
			if _, err := r.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
				return nil, fmt.Errorf("StartContainer: %w", err)
			}
			if i >= warmup {
				add("Create+StartContainer", "ms", 0, ms(time.Since(t)))
			}
			ids = append(ids, c.ContainerId)
		}
		return ids, nil
	}
	timed := func(name string, i int, target float64, call func() error) error {
		t := time.Now()
		if err := call(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if i >= warmup {
			add(name, "ms", target, ms(time.Since(t)))
		}
		return nil
	}
	stop := func(id string) func() error {
		return func() error {
			_, err := r.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 0})
			return err
		}
	}
	remove := func(id string) func() error {
		return func() error {
			_, err := r.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id})
			return err
		}
	}
	ids, err := createStart()
	if err != nil {
		return err
	}
	for i, id := range ids {
		if err := timed("StopContainer (timeout 0)", i, 0, stop(id)); err != nil {
			return err
		}
	}
	for i, id := range ids {
		if err := timed("RemoveContainer, later", i, targetRemove, remove(id)); err != nil {
			return err
		}
	}
	if ids, err = createStart(); err != nil {
		return err
	}
	for i, id := range ids {
		t := time.Now()
		if err := timed("StopContainer (timeout 0)", i, 0, stop(id)); err != nil {
			return err
		}
		if err := timed("RemoveContainer, after stop", i, targetRemove, remove(id)); err != nil {
			return err
		}
		if i >= warmup {
			add("Stop+RemoveContainer", "ms", 0, ms(time.Since(t)))
		}
	}
	if _, err := r.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		return err
	}
	if _, err := r.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		return err
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
