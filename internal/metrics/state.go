package metrics

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"
)

// State is what huskd holds when Prometheus scrapes.
type State struct {
	// Pods and Containers count by state, named as in the CRI without
	// its prefix, lower case: pods "ready", "notready"; containers
	// "created", "running", "exited", "unknown".
	Pods       map[string]int
	Containers map[string]int
	Images     int
	// Monitors are the husk-monitor processes running (one per pod with
	// containers).
	Monitors int
}

// States always reported, zero or not, so a dashboard sees every series.
var (
	podStates       = []string{"ready", "notready"}
	containerStates = []string{"created", "running", "exited", "unknown"}
)

var (
	podsDesc       = prometheus.NewDesc("husk_pods", "Pod sandboxes huskd holds, by state.", []string{"state"}, nil)
	containersDesc = prometheus.NewDesc("husk_containers", "Containers huskd holds, by state.", []string{"state"}, nil)
	imagesDesc     = prometheus.NewDesc("husk_images", "Images in husk's image store.", nil, nil)
	monitorsDesc   = prometheus.NewDesc("husk_monitors", "husk-monitor processes running (one per pod with containers).", nil, nil)
)

// stateCollector asks for a snapshot at each scrape: the gauges cost
// nothing between scrapes.
type stateCollector struct {
	snapshot func() State
}

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- podsDesc
	ch <- containersDesc
	ch <- imagesDesc
	ch <- monitorsDesc
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.snapshot()
	byState(ch, podsDesc, podStates, s.Pods)
	byState(ch, containersDesc, containerStates, s.Containers)
	ch <- prometheus.MustNewConstMetric(imagesDesc, prometheus.GaugeValue, float64(s.Images))
	ch <- prometheus.MustNewConstMetric(monitorsDesc, prometheus.GaugeValue, float64(s.Monitors))
}

// byState sends one gauge per state: the fixed ones first, then any
// other the snapshot has.
func byState(ch chan<- prometheus.Metric, d *prometheus.Desc, fixed []string, counts map[string]int) {
	seen := map[string]bool{}
	for _, st := range fixed {
		seen[st] = true
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(counts[st]), st)
	}
	var extra []string
	for st := range counts {
		if !seen[st] {
			extra = append(extra, st)
		}
	}
	sort.Strings(extra)
	for _, st := range extra {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(counts[st]), st)
	}
}

// RegisterState reports husk_pods, husk_containers, husk_images and
// husk_monitors from snapshot, called at each scrape.
func (m *Metrics) RegisterState(snapshot func() State) error {
	return m.reg.Register(stateCollector{snapshot: snapshot})
}
