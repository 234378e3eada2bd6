// Package metrics holds huskd's Prometheus series (client_golang) and
// records them from the hot paths without a lock of its own: every label
// value known in advance (CRI methods, phases, session kinds) has its child
// resolved once in New, so recording is one read-only map lookup and an
// atomic add inside client_golang. Gauges of what huskd holds (pods,
// containers, images, monitors) are computed when Prometheus scrapes, from
// the managers' snapshots, so nothing records them on a hot path at all.
//
// A nil *Metrics records nothing: huskd passes none when [metrics] is off.
package metrics

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Phases of RunPodSandbox, and of CreateContainer and StartContainer, as
// internal/sandbox and internal/container name them.
var (
	SandboxPhases   = []string{"persist", "files", "netns", "network", "monitor", "infra", "ready"}
	ContainerPhases = []string{"reserve", "rootfs", "image_volumes", "spec", "persisted", "run", "started"}
	// StreamKinds are the sessions of the streaming server.
	StreamKinds = []string{"exec", "attach", "portforward"}
)

// Buckets, in seconds. CRI calls range from a cached read (well under a
// millisecond) to a RunPodSandbox the kubelet gives four minutes.
var (
	callBuckets  = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 240}
	phaseBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10}
	pullBuckets  = []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
	// Sessions last from a one-shot exec to an attach held for days.
	sessionBuckets = []float64{.01, .1, 1, 10, 60, 600, 3600, 86400}
)

// codeNames are the gRPC codes by number, as grpc's codes.Code.String()
// spells them: the code label's values. A name not here still counts, through
// client_golang's own lookup.
var codeNames = []string{"OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
	"AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange",
	"Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated"}

const numCodes = 17

// codeIndex is read-only after init.
var codeIndex = func() map[string]int {
	m := make(map[string]int, len(codeNames))
	for i, n := range codeNames {
		m[n] = i
	}
	return m
}()

// Metrics is the registry of huskd's series.
type Metrics struct {
	reg *prometheus.Registry

	callTotal    *prometheus.CounterVec
	callDuration *prometheus.HistogramVec
	// calls is read-only after New: no lock guards it.
	calls map[string]*methodSeries

	sandboxPhases   phaseSeries
	containerPhases phaseSeries

	pullBytes    prometheus.Counter
	pullDuration prometheus.Histogram

	sessions map[string]*sessionSeries // read-only after New
}

// methodSeries are one CRI method's children. codes holds the counter of
// each code once it was first seen (OK from the start): an error code
// resolves through client_golang once, then it is an atomic load.
type methodSeries struct {
	vec      *prometheus.CounterVec
	method   string
	duration prometheus.Observer
	codes    [numCodes]atomic.Pointer[prometheus.Counter]
}

func (s *methodSeries) counter(code string) prometheus.Counter {
	i, ok := codeIndex[code]
	if !ok {
		return s.vec.WithLabelValues(s.method, code)
	}
	if p := s.codes[i].Load(); p != nil {
		return *p
	}
	ctr := s.vec.WithLabelValues(s.method, code)
	s.codes[i].Store(&ctr)
	return ctr
}

// phaseSeries are the children of one phase histogram by phase name.
type phaseSeries struct {
	vec   *prometheus.HistogramVec
	known map[string]prometheus.Observer // read-only after New
}

func (p phaseSeries) ObservePhase(name string, d time.Duration) {
	o, ok := p.known[name]
	if !ok {
		o = p.vec.WithLabelValues(name)
	}
	o.Observe(d.Seconds())
}

type sessionSeries struct {
	started  prometheus.Counter
	active   prometheus.Gauge
	duration prometheus.Observer
}

// New registers every series, with a child for each CRI method in methods
// (both services, streaming ones included), and the Go runtime and process
// collectors.
func New(methods []string) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		callTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "husk_cri_requests_total",
			Help: "CRI calls answered, by method and gRPC code; a stream (GetContainerEvents) counts when it ends.",
		}, []string{"method", "code"}),
		callDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "husk_cri_request_duration_seconds",
			Help:    "Time huskd took to answer a CRI call, by method (a stream: how long it stayed open).",
			Buckets: callBuckets,
		}, []string{"method"}),
		calls: map[string]*methodSeries{},
		sandboxPhases: phaseSeries{vec: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "husk_sandbox_phase_duration_seconds",
			Help:    "Time of each step of RunPodSandbox: persist, files, netns, network (CNI ADD, which runs beside infra), monitor (the pod monitor's start, part of infra), infra, ready.",
			Buckets: phaseBuckets,
		}, []string{"phase"}), known: map[string]prometheus.Observer{}},
		containerPhases: phaseSeries{vec: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "husk_container_phase_duration_seconds",
			Help:    "Time of each step of CreateContainer (reserve, rootfs, image_volumes, spec, persisted) and StartContainer (run, started).",
			Buckets: phaseBuckets,
		}, []string{"phase"}), known: map[string]prometheus.Observer{}},
		pullBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "husk_image_pull_bytes_total",
			Help: "Bytes of image content (configs and compressed layers) downloaded from registries.",
		}),
		pullDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "husk_image_pull_duration_seconds",
			Help:    "Time of image pulls that succeeded, from resolving the reference to the stored record.",
			Buckets: pullBuckets,
		}),
		sessions: map[string]*sessionSeries{},
	}
	for _, method := range methods {
		s := &methodSeries{vec: m.callTotal, method: method, duration: m.callDuration.WithLabelValues(method)}
		s.counter("OK")
		m.calls[method] = s
	}
	for _, p := range SandboxPhases {
		m.sandboxPhases.known[p] = m.sandboxPhases.vec.WithLabelValues(p)
	}
	for _, p := range ContainerPhases {
		m.containerPhases.known[p] = m.containerPhases.vec.WithLabelValues(p)
	}
	started := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "husk_stream_sessions_total",
		Help: "Exec, attach and port-forward sessions started on the streaming server.",
	}, []string{"kind"})
	active := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "husk_stream_sessions_active",
		Help: "Exec, attach and port-forward sessions open now.",
	}, []string{"kind"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "husk_stream_session_duration_seconds",
		Help:    "How long exec, attach and port-forward sessions lasted.",
		Buckets: sessionBuckets,
	}, []string{"kind"})
	for _, k := range StreamKinds {
		m.sessions[k] = &sessionSeries{started: started.WithLabelValues(k), active: active.WithLabelValues(k), duration: duration.WithLabelValues(k)}
	}
	m.reg.MustRegister(m.callTotal, m.callDuration, m.sandboxPhases.vec, m.containerPhases.vec,
		m.pullBytes, m.pullDuration, started, active, duration,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// ObserveCall records one CRI call and its gRPC code ("OK", "NotFound"...).
func (m *Metrics) ObserveCall(method, code string, d time.Duration) {
	if m == nil {
		return
	}
	s, ok := m.calls[method]
	if !ok {
		// Not a CRI method New was told of: resolved through
		// client_golang each time (its lock), never on husk's own paths.
		m.callTotal.WithLabelValues(method, code).Inc()
		m.callDuration.WithLabelValues(method).Observe(d.Seconds())
		return
	}
	s.counter(code).Inc()
	s.duration.Observe(d.Seconds())
}

// SandboxPhases receives the steps of RunPodSandbox (phase.Observer).
func (m *Metrics) SandboxPhases() PhaseObserver {
	if m == nil {
		return nil
	}
	return m.sandboxPhases
}

// ContainerPhases receives the steps of CreateContainer and StartContainer
// (phase.Observer).
func (m *Metrics) ContainerPhases() PhaseObserver {
	if m == nil {
		return nil
	}
	return m.containerPhases
}

// PhaseObserver is what the phase timers report to.
type PhaseObserver interface {
	ObservePhase(name string, d time.Duration)
}

// PulledBytes counts image content downloaded.
func (m *Metrics) PulledBytes(n int64) {
	if m == nil || n <= 0 {
		return
	}
	m.pullBytes.Add(float64(n))
}

// PullDone records a pull that succeeded.
func (m *Metrics) PullDone(d time.Duration) {
	if m == nil {
		return
	}
	m.pullDuration.Observe(d.Seconds())
}

// SessionStarted counts a streaming session of kind (exec, attach,
// portforward) and returns what to call when it ends.
func (m *Metrics) SessionStarted(kind string) (ended func(time.Duration)) {
	if m == nil {
		return func(time.Duration) {}
	}
	s, ok := m.sessions[kind]
	if !ok {
		return func(time.Duration) {}
	}
	s.started.Inc()
	s.active.Inc()
	return func(d time.Duration) {
		s.active.Dec()
		s.duration.Observe(d.Seconds())
	}
}
