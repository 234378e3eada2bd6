package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
)

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	if rec.Code != 200 {
		t.Fatalf("scrape: %d %s", rec.Code, b)
	}
	return string(b)
}

func TestSeries(t *testing.T) {
	m := New([]string{"RunPodSandbox", "GetContainerEvents"})
	m.ObserveCall("RunPodSandbox", "OK", 30*time.Millisecond)
	m.ObserveCall("RunPodSandbox", "InvalidArgument", time.Millisecond)
	m.ObserveCall("RunPodSandbox", "InvalidArgument", time.Millisecond)
	m.ObserveCall("Unlisted", "NotFound", time.Millisecond)
	m.SandboxPhases().ObservePhase("infra", 20*time.Millisecond)
	m.SandboxPhases().ObservePhase("other", time.Millisecond)
	m.ContainerPhases().ObservePhase("rootfs", time.Millisecond)
	m.PulledBytes(1000)
	m.PulledBytes(24)
	m.PullDone(2 * time.Second)
	end := m.SessionStarted("exec")
	if err := m.RegisterState(func() State {
		return State{Pods: map[string]int{"ready": 2}, Containers: map[string]int{"running": 3, "paused": 1}, Images: 4, Monitors: 2}
	}); err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct{ name, want string }{
		{"ok counter", `husk_cri_requests_total{code="OK",method="RunPodSandbox"} 1`},
		{"error counter", `husk_cri_requests_total{code="InvalidArgument",method="RunPodSandbox"} 2`},
		{"stream method pre-resolved", `husk_cri_requests_total{code="OK",method="GetContainerEvents"} 0`},
		{"unlisted method", `husk_cri_requests_total{code="NotFound",method="Unlisted"} 1`},
		{"duration count", `husk_cri_request_duration_seconds_count{method="RunPodSandbox"} 3`},
		{"duration bucket", `husk_cri_request_duration_seconds_bucket{method="RunPodSandbox",le="0.05"} 3`},
		{"sandbox phase", `husk_sandbox_phase_duration_seconds_count{phase="infra"} 1`},
		{"sandbox phase zero", `husk_sandbox_phase_duration_seconds_count{phase="network"} 0`},
		{"unknown phase", `husk_sandbox_phase_duration_seconds_count{phase="other"} 1`},
		{"container phase", `husk_container_phase_duration_seconds_count{phase="rootfs"} 1`},
		{"pull bytes", `husk_image_pull_bytes_total 1024`},
		{"pull duration", `husk_image_pull_duration_seconds_sum 2`},
		{"sessions", `husk_stream_sessions_total{kind="exec"} 1`},
		{"active", `husk_stream_sessions_active{kind="exec"} 1`},
		{"pods", `husk_pods{state="ready"} 2`},
		{"pods zero", `husk_pods{state="notready"} 0`},
		{"containers", `husk_containers{state="running"} 3`},
		{"containers extra", `husk_containers{state="paused"} 1`},
		{"containers zero", `husk_containers{state="exited"} 0`},
		{"images", `husk_images 4`},
		{"monitors", `husk_monitors 2`},
		{"go collector", `go_goroutines `},
		{"process collector", `process_resident_memory_bytes `},
	} {
		if out := scrape(t, m); !strings.Contains(out, tt.want) {
			t.Errorf("%s: no %q in the scrape", tt.name, tt.want)
		}
	}
	end(time.Second)
	if got := testutil.ToFloat64(m.sessions["exec"].active); got != 0 {
		t.Errorf("active exec sessions after end = %v, want 0", got)
	}
}

// A nil *Metrics is what huskd holds with [metrics] off: it records nothing
// and never panics.
func TestNilRecordsNothing(t *testing.T) {
	var m *Metrics
	m.ObserveCall("RunPodSandbox", "OK", time.Second)
	m.PulledBytes(1)
	m.PullDone(time.Second)
	m.SessionStarted("exec")(time.Second)
	if m.SandboxPhases() != nil || m.ContainerPhases() != nil {
		t.Error("nil Metrics returned phase observers")
	}
}

// Recording a known method, code or phase allocates nothing: it is a map
// read and atomics, no lock of husk's and no label hashing.
func TestRecordingDoesNotAllocate(t *testing.T) {
	m := New([]string{"RunPodSandbox"})
	m.ObserveCall("RunPodSandbox", "NotFound", time.Millisecond) // resolve once
	phases := m.SandboxPhases()
	for _, tt := range []struct {
		name string
		f    func()
	}{
		{"call OK", func() { m.ObserveCall("RunPodSandbox", "OK", time.Millisecond) }},
		{"call error", func() { m.ObserveCall("RunPodSandbox", "NotFound", time.Millisecond) }},
		{"phase", func() { phases.ObservePhase("infra", time.Millisecond) }},
		{"pull bytes", func() { m.PulledBytes(10) }},
	} {
		if n := testing.AllocsPerRun(100, tt.f); n != 0 {
			t.Errorf("%s: %v allocations per record, want 0", tt.name, n)
		}
	}
}

func TestConcurrentFirstUseOfACode(t *testing.T) {
	m := New([]string{"StopPodSandbox"})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				m.ObserveCall("StopPodSandbox", codeNames[j%numCodes], time.Microsecond)
			}
		}()
	}
	wg.Wait()
	var total float64
	for c := 0; c < numCodes; c++ {
		total += testutil.ToFloat64(m.callTotal.WithLabelValues("StopPodSandbox", codeNames[c]))
	}
	if total != 800 {
		t.Errorf("counted %v calls, want 800", total)
	}
}

func BenchmarkObserveCall(b *testing.B) {
	m := New([]string{"RunPodSandbox"})
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.ObserveCall("RunPodSandbox", "OK", time.Millisecond)
		}
	})
}

// The package keeps the gRPC code names without importing grpc (only
// internal/cri does): they must be spelled as codes.Code.String() does.
func TestCodeNamesMatchGRPC(t *testing.T) {
	if len(codeNames) != numCodes {
		t.Fatalf("%d code names, numCodes %d", len(codeNames), numCodes)
	}
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if codeNames[c] != c.String() {
			t.Errorf("code %d: %q here, %q in grpc", c, codeNames[c], c.String())
		}
	}
}
