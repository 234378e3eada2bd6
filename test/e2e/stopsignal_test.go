package e2e

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ContainerConfig.stop_signal (ContainerStopSignals) is what StopContainer
// sends first, over the image's STOPSIGNAL, which stays the fallback, then
// SIGTERM; ContainerStatus reports the signal in use. Each container traps
// the three signals with an exit code of its own.
func TestStopSignal(t *testing.T) {
	e := containerEnv(t)
	for _, handler := range []string{"runc", "crun"} {
		t.Run(handler, func(t *testing.T) {
			pod := e.podConfig("stopsig-" + handler)
			podID := e.runPod(pod, handler)
			trap := "trap 'exit 41' USR1; trap 'exit 42' USR2; trap 'exit 43' TERM; echo > /tmp/ready; while true; do sleep 0.1; done"
			tests := []struct {
				name   string
				image  string
				signal runtimeapi.Signal
				want   runtimeapi.Signal
				exit   int32
			}{
				{"config", "busybox:stopsignal", runtimeapi.Signal_SIGNAL_SIGUSR2, runtimeapi.Signal_SIGNAL_SIGUSR2, 42},
				{"image", "busybox:stopsignal", runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT, runtimeapi.Signal_SIGNAL_SIGUSR1, 41},
				{"default", "busybox:e2e", runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT, runtimeapi.Signal_SIGNAL_SIGTERM, 43},
			}
			for _, tt := range tests {
				cfg := ctrConfig(tt.name, "sh", "-c", trap)
				cfg.Image.Image = tt.image
				cfg.StopSignal = tt.signal
				id := e.run(podID, pod, cfg)
				st, err := e.rt.ContainerStatus(e.ctx(), &runtimeapi.ContainerStatusRequest{ContainerId: id})
				if err != nil || st.Status.StopSignal != tt.want {
					t.Errorf("%s: ContainerStatus.stop_signal = %s, %v; want %s", tt.name, st.GetStatus().GetStopSignal(), err, tt.want)
				}
				waitFile(t, e, id, "/tmp/ready")
				start := time.Now()
				if _, err := e.rt.StopContainer(e.ctx(), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 30}); err != nil {
					t.Fatalf("%s: StopContainer: %v", tt.name, err)
				}
				if st := e.waitExited(id, time.Second); st.ExitCode != tt.exit || time.Since(start) > 10*time.Second {
					t.Errorf("%s: stopped with exit %d after %s, want %d (trapped %s) well before the 30s timeout",
						tt.name, st.ExitCode, time.Since(start).Round(time.Millisecond), tt.exit, tt.want)
				}
			}
			bad := ctrConfig("bad", "true")
			bad.StopSignal = 99
			_, err := e.rt.CreateContainer(e.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: bad, SandboxConfig: pod})
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "stop_signal") {
				t.Errorf("CreateContainer with stop_signal 99: %v, want InvalidArgument naming stop_signal", err)
			}
			e.stopRemove(podID)
			e.assertNoLeaks(podID)
		})
	}
}

// waitFile waits until a file exists in the container: its shell is ready.
func waitFile(t *testing.T, e *env, id, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for e.exec(id, 10, "test", "-e", path).ExitCode != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear in %s within 10s", path, id)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
