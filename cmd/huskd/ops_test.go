package main

import (
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/huskrt/husk/internal/config"
)

// Heap profiling costs memory and CPU for the daemon's whole life, so it is
// on only while the pprof server that shows it is.
func TestHeapProfilingOnlyWithPprof(t *testing.T) {
	if heapRateChosen {
		t.Fatal("GODEBUG sets memprofilerate for this test: unset it")
	}
	rate := runtime.MemProfileRate
	t.Cleanup(func() { runtime.MemProfileRate = rate })
	if rate != 0 {
		t.Fatalf("MemProfileRate is %d at start, want 0 (off without [debug] address)", rate)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	d := &daemon{cfg: &config.Config{}, log: log}
	stop, err := d.startOps()
	if err != nil {
		t.Fatal(err)
	}
	stop()
	if runtime.MemProfileRate != 0 {
		t.Fatalf("MemProfileRate %d without [debug] address, want 0", runtime.MemProfileRate)
	}

	cfg := &config.Config{}
	cfg.Debug.Address = "127.0.0.1:0"
	var logged strings.Builder
	d = &daemon{cfg: cfg, log: slog.New(slog.NewTextHandler(&logged, nil))}
	stop, err = d.startOps()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if runtime.MemProfileRate != heapSampleRate {
		t.Fatalf("MemProfileRate %d with [debug] address, want %d", runtime.MemProfileRate, heapSampleRate)
	}
	_, addr, ok := strings.Cut(logged.String(), "address=")
	if !ok {
		t.Fatalf("no address logged: %q", logged.String())
	}
	keep := make([][]byte, 0, 64)
	for range 64 { // 4 MiB: several samples at 512 KiB
		keep = append(keep, make([]byte, 64<<10))
	}
	runtime.GC()
	resp, err := http.Get("http://" + strings.TrimSpace(addr) + "/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	runtime.KeepAlive(keep)
	first, _, _ := strings.Cut(string(body), "\n")
	if !strings.HasSuffix(first, "@ heap/1048576") || strings.HasPrefix(first, "heap profile: 0: 0") {
		t.Errorf("heap profile starts %q, want samples at the default rate", first)
	}
}

func TestGodebugSetsHeapRate(t *testing.T) {
	for godebug, want := range map[string]bool{
		"":                                 false,
		"memprofilerate=1":                 true,
		"madvdontneed=1,memprofilerate=0":  true,
		"gctrace=1, memprofilerate=524288": true,
		"gctrace=1":                        false,
		"xmemprofilerate=1":                false,
	} {
		if got := godebugSetsHeapRate(godebug); got != want {
			t.Errorf("godebugSetsHeapRate(%q) = %v, want %v", godebug, got, want)
		}
	}
}
