package e2e

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Operating husk: Prometheus metrics and pprof on loopback, JSON logs.
// The counters and histograms move with a RunPodSandbox and a
// CreateContainer, the gauges follow the state, a CPU profile comes back,
// and every log line is a JSON object naming what it is about.
func TestMetricsProfilingAndJSONLogs(t *testing.T) {
	t.Parallel()
	e := containerEnvWith(t, withRootConfig("log_format = \"json\"\n"),
		withConfig("[metrics]\naddress = \"127.0.0.1:0\"\n[debug]\naddress = \"127.0.0.1:0\"\n"))
	metricsAddr := fmt.Sprint(e.waitLogged(t, map[string]any{"msg": "metrics serving"})["address"])
	pprofAddr := fmt.Sprint(e.waitLogged(t, map[string]any{"msg": "pprof serving"})["address"])

	before := scrape(t, metricsAddr)
	for _, s := range []string{"go_goroutines", "process_resident_memory_bytes", "go_gc_duration_seconds_count", "husk_monitors"} {
		if _, ok := before[s]; !ok {
			t.Errorf("no %s in the scrape", s)
		}
	}
	if before["husk_image_pull_bytes_total"] <= 0 || before["husk_image_pull_duration_seconds_count"] < 2 || before["husk_images"] != 2 {
		t.Errorf("after two pulls: pull bytes %v, pulls %v, images %v", before["husk_image_pull_bytes_total"],
			before["husk_image_pull_duration_seconds_count"], before["husk_images"])
	}

	pod := e.podConfig("ops")
	podID := e.runPod(pod, "")
	after := scrape(t, metricsAddr)
	moved := func(series string, by float64) {
		t.Helper()
		if after[series]-before[series] != by {
			t.Errorf("%s: %v -> %v, want +%v", series, before[series], after[series], by)
		}
	}
	moved(`husk_cri_requests_total{code="OK",method="RunPodSandbox"}`, 1)
	moved(`husk_cri_request_duration_seconds_count{method="RunPodSandbox"}`, 1)
	moved(`husk_cri_request_duration_seconds_bucket{method="RunPodSandbox",le="+Inf"}`, 1)
	if after[`husk_cri_request_duration_seconds_sum{method="RunPodSandbox"}`] <= before[`husk_cri_request_duration_seconds_sum{method="RunPodSandbox"}`] {
		t.Error("RunPodSandbox duration sum did not grow")
	}
	for _, p := range []string{"persist", "files", "netns", "network", "monitor", "infra", "ready"} {
		moved(`husk_sandbox_phase_duration_seconds_count{phase="`+p+`"}`, 1)
	}
	moved(`husk_pods{state="ready"}`, 1)
	moved(`husk_monitors`, 1) // the pod's monitor starts its infra
	moved(`husk_cri_requests_total{code="OK",method="CreateContainer"}`, 0)

	before = after
	ctr := e.run(podID, pod, ctrConfig("web", "sleep", "3600"))
	if _, _, code := e.execStream(t, "spdy", ctr, []string{"true"}, nil, false, nil); code != 0 {
		t.Errorf("exec true: exit %d", code)
	}
	after = scrape(t, metricsAddr)
	moved(`husk_cri_requests_total{code="OK",method="CreateContainer"}`, 1)
	moved(`husk_cri_requests_total{code="OK",method="Exec"}`, 1)
	for _, p := range []string{"reserve", "rootfs", "image_volumes", "spec", "persisted", "run", "started"} {
		moved(`husk_container_phase_duration_seconds_count{phase="`+p+`"}`, 1)
	}
	moved(`husk_containers{state="running"}`, 1)
	moved(`husk_monitors`, 0)
	moved(`husk_stream_sessions_total{kind="exec"}`, 1)
	moved(`husk_stream_session_duration_seconds_count{kind="exec"}`, 1)
	if after[`husk_stream_sessions_active{kind="exec"}`] != 0 {
		t.Errorf("%v exec sessions still active", after[`husk_stream_sessions_active{kind="exec"}`])
	}

	// A call that fails is counted with its code.
	if _, err := e.rt.ContainerStatus(e.ctx(), &runtimeapi.ContainerStatusRequest{ContainerId: "nosuch"}); err == nil {
		t.Error("ContainerStatus of an unknown ID succeeded")
	}
	if got := scrape(t, metricsAddr)[`husk_cri_requests_total{code="NotFound",method="ContainerStatus"}`]; got != 1 {
		t.Errorf("NotFound ContainerStatus counted %v times, want 1", got)
	}

	// pprof: the index and a one-second CPU profile (gzipped protobuf).
	if !bytes.Contains(httpGet(t, "http://"+pprofAddr+"/debug/pprof/"), []byte("goroutine")) {
		t.Error("pprof index lists no goroutine profile")
	}
	zr, err := gzip.NewReader(bytes.NewReader(httpGet(t, "http://"+pprofAddr+"/debug/pprof/profile?seconds=1")))
	if err != nil {
		t.Fatalf("CPU profile is not gzip: %v", err)
	}
	if prof, err := io.ReadAll(zr); err != nil || len(prof) < 64 {
		t.Errorf("CPU profile: %d bytes, %v", len(prof), err)
	}

	// The log: one JSON line per mutating call, with IDs, outcome and
	// duration; streaming sessions start and end.
	for _, want := range []map[string]any{
		{"msg": "cri call", "method": "RunPodSandbox", "pod_sandbox_id": podID, "code": "OK", "pod_name": "ops", "level": "INFO"},
		{"msg": "cri call", "method": "CreateContainer", "pod_sandbox_id": podID, "container_id": ctr, "image": "busybox:e2e", "code": "OK"},
		{"msg": "cri call", "method": "StartContainer", "container_id": ctr, "code": "OK"},
		{"msg": "cri call", "method": "PullImage", "image": "busybox:e2e", "code": "OK"},
		{"msg": "cri call", "method": "ContainerStatus", "container_id": "nosuch", "code": "NotFound", "level": "INFO"},
		{"msg": "stream session started", "kind": "exec", "container_id": ctr},
		{"msg": "stream session ended", "kind": "exec", "container_id": ctr, "exit_code": 0},
	} {
		lines := e.logged(t, want)
		if len(lines) != 1 {
			t.Errorf("%d log lines with %v, want 1", len(lines), want)
			continue
		}
		if d, ok := lines[0]["duration"].(float64); want["msg"] != "stream session started" && (!ok || d <= 0) {
			t.Errorf("line %v has no duration", lines[0])
		}
	}
	e.stopRemove(podID)
	if got := scrape(t, metricsAddr)[`husk_pods{state="ready"}`]; got != 0 {
		t.Errorf("husk_pods{state=ready} = %v after the pod's removal", got)
	}
	e.assertNoLeaks(podID)
}
