package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// podConfig is a sandbox config as the kubelet sends it.
func (r *runtimeUnderTest) podConfig(name string, i int) *runtimeapi.PodSandboxConfig {
	uid := fmt.Sprintf("bench-%s-%d-%d", name, i, time.Now().UnixNano())
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: fmt.Sprintf("%s-%d", name, i), Namespace: "bench", Uid: uid},
		Hostname:     fmt.Sprintf("%s-%d", name, i),
		LogDirectory: filepath.Join(r.logDirs, "bench_"+name+"_"+uid),
		DnsConfig:    &runtimeapi.DNSConfig{Servers: []string{"10.96.0.10"}, Searches: []string{"bench.svc.cluster.local"}, Options: []string{"ndots:5"}},
		PortMappings: []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80}},
		Labels:       map[string]string{"app": name, "io.kubernetes.pod.namespace": "bench"},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{}},
		},
	}
}

type record func(name, unit string, target float64, v ...float64)

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// benchSandboxes times Run, Stop and Remove over o.n sandboxes (after 3
// uncounted), then measures per-pod memory with o.pods pods running.
func benchSandboxes(ctx context.Context, r *runtimeUnderTest, o options, network string, memory bool, rec record) error {
	fmt.Fprintf(os.Stderr, "husk-bench: %s: %d sandboxes\n", r.side, o.n)
	const warmup = 3
	var ids []string
	for i := 0; i < o.n+warmup; i++ {
		t := time.Now()
		resp, err := r.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: r.podConfig("lat", i)})
		if err != nil {
			return fmt.Errorf("RunPodSandbox: %w", err)
		}
		if i >= warmup {
			rec("RunPodSandbox "+network, "ms", 0.25, ms(time.Since(t)))
		}
		ids = append(ids, resp.PodSandboxId)
	}
	for i, id := range ids {
		t := time.Now()
		if _, err := r.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
			return fmt.Errorf("StopPodSandbox: %w", err)
		}
		if i >= warmup {
			rec("StopPodSandbox "+network, "ms", 0.33, ms(time.Since(t)))
		}
	}
	for i, id := range ids {
		t := time.Now()
		if _, err := r.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
			return fmt.Errorf("RemovePodSandbox: %w", err)
		}
		if i >= warmup {
			rec("RemovePodSandbox "+network, "ms", 0, ms(time.Since(t)))
		}
	}

	if !memory {
		return nil
	}
	// Memory: what the runtime adds per pod with o.pods pods running.
	time.Sleep(500 * time.Millisecond)
	daemonBefore := privateKiB(r.daemon.Process.Pid)
	ids = ids[:0]
	for i := 0; i < o.pods; i++ {
		resp, err := r.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: r.podConfig("mem", i)})
		if err != nil {
			return fmt.Errorf("RunPodSandbox: %w", err)
		}
		ids = append(ids, resp.PodSandboxId)
	}
	time.Sleep(time.Second)
	pids, err := r.perPodProcesses(ctx, ids)
	if err != nil {
		return err
	}
	var total float64
	for _, pid := range pids {
		total += privateKiB(pid)
	}
	daemonAfter := privateKiB(r.daemon.Process.Pid)
	perPod := total/float64(len(ids)) + (daemonAfter-daemonBefore)/float64(len(ids))
	fmt.Fprintf(os.Stderr, "husk-bench: %s: %d per-pod processes, %.0f KiB private in all; daemon %.0f -> %.0f KiB\n",
		r.side, len(pids), total, daemonBefore, daemonAfter)
	rec("per-pod private memory", "KiB", 0.5, perPod)
	for _, id := range ids {
		if _, err := r.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
			return err
		}
		if _, err := r.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
			return err
		}
	}
	return nil
}

// perPodProcesses lists the processes the runtime runs for the pods: for
// husk each infra (from verbose status) and any husk-monitor; for
// containerd each shim of this containerd and the pause under it.
func (r *runtimeUnderTest) perPodProcesses(ctx context.Context, ids []string) ([]int, error) {
	var pids []int
	switch r.side {
	case "husk":
		for _, id := range ids {
			resp, err := r.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
			if err != nil {
				return nil, err
			}
			var info struct {
				PID int `json:"pid"`
			}
			if err := json.Unmarshal([]byte(resp.Info["info"]), &info); err != nil || info.PID == 0 {
				return nil, fmt.Errorf("infra pid of %s: %v", id, err)
			}
			pids = append(pids, info.PID)
		}
		for _, p := range allPIDs() {
			if comm(p) == "husk-monitor" && ppid(p) == r.daemon.Process.Pid {
				pids = append(pids, p)
			}
		}
	case "containerd":
		for _, p := range allPIDs() {
			cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
			if !strings.Contains(string(cmd), "containerd-shim-runc-v2") || !strings.Contains(string(cmd), r.socket) {
				continue
			}
			pids = append(pids, p)
			for _, c := range allPIDs() {
				if ppid(c) == p {
					pids = append(pids, c)
				}
			}
		}
	}
	return pids, nil
}

func allPIDs() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if p, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func statFields(pid int) (string, []string) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", nil
	}
	s := string(b)
	open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || close < open {
		return "", nil
	}
	return s[open+1 : close], strings.Fields(s[close+1:])
}

func comm(pid int) string { c, _ := statFields(pid); return c }

func ppid(pid int) int {
	_, f := statFields(pid)
	if len(f) < 2 {
		return 0
	}
	p, _ := strconv.Atoi(f[1])
	return p
}

// privateKiB is Private_Clean + Private_Dirty of a process.
func privateKiB(pid int) float64 {
	return smapsField(pid, "Private_Clean:") + smapsField(pid, "Private_Dirty:")
}

func smapsField(pid int, key string) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) >= 2 && fs[0] == key {
			v, _ := strconv.ParseFloat(fs[1], 64)
			return v
		}
	}
	return 0
}

func statusField(pid int, key string) float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if fs := strings.Fields(l); len(fs) >= 2 && fs[0] == key {
			v, _ := strconv.ParseFloat(fs[1], 64)
			return v
		}
	}
	return 0
}

// benchInfra compares the infra binaries standalone: husk-pause against
// Debian's catatonit -P (5 runs each).
func benchInfra(o options, rec func(name, unit, side string, v ...float64)) error {
	for _, c := range []struct {
		side string
		argv []string
	}{{"husk", []string{o.pause}}, {"containerd", []string{"/usr/bin/catatonit", "-P"}}} {
		fi, err := os.Stat(c.argv[0])
		if err != nil {
			fmt.Fprintf(os.Stderr, "husk-bench: skip %s: %v\n", c.argv[0], err)
			continue
		}
		rec("infra binary size", "KiB", c.side, float64(fi.Size())/1024)
		for i := 0; i < 5; i++ {
			cmd := exec.Command(c.argv[0], c.argv[1:]...)
			cmd.Env = []string{"GOMAXPROCS=1"} // as husk runs its infra
			if err := cmd.Start(); err != nil {
				return err
			}
			time.Sleep(300 * time.Millisecond)
			rec("infra RssAnon", "KiB", c.side, statusField(cmd.Process.Pid, "RssAnon:"))
			rec("infra threads", "", c.side, statusField(cmd.Process.Pid, "Threads:"))
			_ = cmd.Process.Signal(unix.SIGTERM)
			_ = cmd.Wait()
		}
	}
	return nil
}
