package container

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The real-time signals as glibc numbers them (the kernel's first two are
// the C library's own): what runc and moby's signal table use for
// "SIGRTMIN+n" and "SIGRTMAX-n".
const (
	sigRTMin = 34
	sigRTMax = 64
)

// signalAliases are the names the CRI's Signal enum has that x/sys/unix
// does not know.
var signalAliases = map[string]syscall.Signal{"SIGCLD": unix.SIGCHLD, "SIGIOT": unix.SIGABRT, "SIGPOLL": unix.SIGIO}

// stopSignalName is the signal StopContainer sends first, by name, as the
// record keeps it: the config's stop_signal (ContainerStopSignals), else
// the image's STOPSIGNAL; empty means SIGTERM.
func stopSignalName(cfg *runtimeapi.ContainerConfig, imageSignal string) string {
	if s := cfg.GetStopSignal(); s != runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT {
		return criSignalName(s)
	}
	return imageSignal
}

// criSignalName is the name of a CRI Signal: SIGNAL_SIGUSR1 is "SIGUSR1",
// SIGNAL_SIGRTMINPLUS3 "SIGRTMIN+3", SIGNAL_SIGRTMAXMINUS2 "SIGRTMAX-2";
// empty for the runtime default and for values the enum does not have.
func criSignalName(s runtimeapi.Signal) string {
	if s == runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT {
		return ""
	}
	name, ok := runtimeapi.Signal_name[int32(s)]
	if !ok {
		return ""
	}
	name = strings.TrimPrefix(name, "SIGNAL_")
	name = strings.Replace(name, "MINPLUS", "MIN+", 1)
	return strings.Replace(name, "MAXMINUS", "MAX-", 1)
}

// parseSignal reads a signal as images and the record name it: "SIGUSR1",
// "USR1", "usr1", "SIGRTMIN+3", "RTMAX-1" or a number.
func parseSignal(name string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(name); err == nil {
		if n < 1 || n > sigRTMax {
			return 0, fmt.Errorf("signal %d is out of range", n)
		}
		return syscall.Signal(n), nil
	}
	up := strings.ToUpper(name)
	if !strings.HasPrefix(up, "SIG") {
		up = "SIG" + up
	}
	if s, ok := signalAliases[up]; ok {
		return s, nil
	}
	for _, rt := range []struct {
		prefix string
		base   int
		sign   int
	}{{"SIGRTMIN", sigRTMin, 1}, {"SIGRTMAX", sigRTMax, -1}} {
		rest, ok := strings.CutPrefix(up, rt.prefix)
		if !ok {
			continue
		}
		off := 0
		if rest != "" {
			n, err := strconv.Atoi(rest)
			if err != nil || n*rt.sign < 0 {
				return 0, fmt.Errorf("signal %q is not a real-time signal", name)
			}
			off = n
		}
		if n := rt.base + off; n >= sigRTMin && n <= sigRTMax {
			return syscall.Signal(n), nil
		}
		return 0, fmt.Errorf("signal %q is out of range", name)
	}
	if s := unix.SignalNum(up); s != 0 {
		return s, nil
	}
	return 0, fmt.Errorf("unknown signal %q", name)
}

// stopSignal is the signal a recorded name stands for; SIGTERM when the
// name is empty or unknown (an image's STOPSIGNAL is not validated).
func stopSignal(name string) syscall.Signal {
	if name == "" {
		return syscall.SIGTERM
	}
	if s, err := parseSignal(name); err == nil {
		return s
	}
	return syscall.SIGTERM
}

// criSignals maps signal numbers to the CRI enum, the first name of each
// number winning (SIGCHLD before SIGCLD, SIGABRT before SIGIOT).
var criSignals = func() map[syscall.Signal]runtimeapi.Signal {
	out := map[syscall.Signal]runtimeapi.Signal{}
	for v := int32(1); ; v++ {
		if _, ok := runtimeapi.Signal_name[v]; !ok {
			return out
		}
		s, err := parseSignal(criSignalName(runtimeapi.Signal(v)))
		if _, seen := out[s]; err == nil && !seen {
			out[s] = runtimeapi.Signal(v)
		}
	}
}()

// criSignal is the CRI enum of the signal StopContainer sends first, for
// ContainerStatus.stop_signal.
func criSignal(name string) runtimeapi.Signal {
	return criSignals[stopSignal(name)]
}
