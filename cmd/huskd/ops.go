package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"strings"
	"time"

	"github.com/huskrt/husk/internal/config"
	"github.com/huskrt/husk/internal/cri"
	"github.com/huskrt/husk/internal/metrics"
)

// newMetrics is the registry of every series, or nil when [metrics] is off.
func newMetrics(cfg *config.Config) *metrics.Metrics {
	if cfg.Metrics.Address == "" {
		return nil
	}
	return metrics.New(cri.Methods())
}

// recorder is m as the interface T a part records through, or a nil T when
// metrics are off: an interface holding a nil *Metrics would not be nil, and
// the parts skip a nil one without a call.
func recorder[T any](m *metrics.Metrics) T {
	var none T
	if m == nil {
		return none
	}
	return any(m).(T)
}

// startOps serves /metrics ([metrics] address) and pprof ([debug]
// address), each on its own listener, when configured; stop closes them.
func (d *daemon) startOps() (stop func(), err error) {
	var servers []*http.Server
	stop = func() {
		for _, s := range servers {
			_ = s.Close()
		}
	}
	defer func() {
		if err != nil {
			stop()
			stop = func() {}
		}
	}()
	if d.metrics != nil {
		if err := d.metrics.RegisterState(d.state); err != nil {
			return stop, err
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", d.metrics.Handler())
		s, err := d.serveHTTP("metrics", d.cfg.Metrics.Address, mux)
		if err != nil {
			return stop, fmt.Errorf("metrics.address: %w", err)
		}
		servers = append(servers, s)
	}
	if d.cfg.Debug.Address != "" {
		// Heap profiles show what was allocated from here on.
		if !heapRateChosen {
			runtime.MemProfileRate = heapSampleRate
		}
		mux := http.NewServeMux()
		// Index serves the named profiles too (heap, goroutine, block...).
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		s, err := d.serveHTTP("pprof", d.cfg.Debug.Address, mux)
		if err != nil {
			return stop, fmt.Errorf("debug.address: %w", err)
		}
		servers = append(servers, s)
	}
	return stop, nil
}

// serveHTTP listens on addr and serves h in the background.
func (d *daemon) serveHTTP(what, addr string, h http.Handler) (*http.Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	// No WriteTimeout: a CPU profile or trace writes for as long as asked.
	s := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			d.log.Error(what+" server stopped", "error", err)
		}
	}()
	d.log.Info(what+" serving", "address", l.Addr().String())
	return s, nil
}

// state is what huskd holds, for the gauges at each scrape.
func (d *daemon) state() metrics.State {
	s := metrics.State{Pods: map[string]int{}, Containers: map[string]int{}}
	for _, p := range d.sandboxes.List(nil) {
		s.Pods[stateName(p.GetState().String(), "SANDBOX_")]++
	}
	for _, c := range d.containers.List(nil) {
		s.Containers[stateName(c.GetState().String(), "CONTAINER_")]++
	}
	if imgs, err := d.images.List(); err == nil {
		s.Images = len(imgs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.Monitors = d.containers.Monitors(ctx)
	return s
}

// stateName is a CRI state without its prefix, lower case: "ready".
func stateName(s, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(s, prefix))
}
