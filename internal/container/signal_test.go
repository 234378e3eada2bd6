package container

import (
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Every signal of the CRI's enum names a signal StopContainer can send,
// and ContainerStatus reports it back as the same value (or the first
// name of the same number).
func TestEveryCRISignalMaps(t *testing.T) {
	for v, name := range runtimeapi.Signal_name {
		s := runtimeapi.Signal(v)
		if s == runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT {
			continue
		}
		n := criSignalName(s)
		sig, err := parseSignal(n)
		if err != nil || sig < 1 || sig > sigRTMax {
			t.Errorf("%s: name %q parses to %d, %v", name, n, sig, err)
			continue
		}
		if back := criSignal(n); back == runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT || criSignals[sig] != back {
			t.Errorf("%s (%d) reported back as %s", name, sig, back)
		}
	}
}

func TestStopSignal(t *testing.T) {
	tests := []struct {
		cfg   runtimeapi.Signal
		image string
		want  syscall.Signal
		crit  runtimeapi.Signal
	}{
		{runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT, "", unix.SIGTERM, runtimeapi.Signal_SIGNAL_SIGTERM},
		{runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT, "SIGUSR1", unix.SIGUSR1, runtimeapi.Signal_SIGNAL_SIGUSR1},
		{runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT, "quit", unix.SIGQUIT, runtimeapi.Signal_SIGNAL_SIGQUIT},
		{runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT, "9", unix.SIGKILL, runtimeapi.Signal_SIGNAL_SIGKILL},
		{runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT, "RTMIN+2", 36, runtimeapi.Signal_SIGNAL_SIGRTMINPLUS2},
		{runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT, "SIGBOGUS", unix.SIGTERM, runtimeapi.Signal_SIGNAL_SIGTERM},
		{runtimeapi.Signal_SIGNAL_SIGUSR2, "SIGUSR1", unix.SIGUSR2, runtimeapi.Signal_SIGNAL_SIGUSR2},
		{runtimeapi.Signal_SIGNAL_SIGRTMAXMINUS1, "", 63, runtimeapi.Signal_SIGNAL_SIGRTMAXMINUS1},
		{runtimeapi.Signal_SIGNAL_SIGCLD, "", unix.SIGCHLD, runtimeapi.Signal_SIGNAL_SIGCHLD},
	}
	for _, tt := range tests {
		name := stopSignalName(&runtimeapi.ContainerConfig{StopSignal: tt.cfg}, tt.image)
		if got := stopSignal(name); got != tt.want {
			t.Errorf("config %s, image %q: sends %d, want %d", tt.cfg, tt.image, got, tt.want)
		}
		if got := criSignal(name); got != tt.crit {
			t.Errorf("config %s, image %q: status says %s, want %s", tt.cfg, tt.image, got, tt.crit)
		}
	}
}

func TestParseSignalRefuses(t *testing.T) {
	for _, name := range []string{"0", "65", "SIGRTMIN-1", "SIGRTMAX+1", "SIGRTMIN+31", "RTMINx", "NOPE"} {
		if s, err := parseSignal(name); err == nil {
			t.Errorf("parseSignal(%q) = %d, want an error", name, s)
		}
	}
}
