package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Sides of the metrics overhead scenario.
const (
	metricsOff = "metrics off"
	metricsOn  = "metrics on"
)

// metricsScenarios are what the overhead is measured on.
var metricsScenarios = []string{"RunPodSandbox", "CreateContainer"}

// benchMetricsOverhead runs two huskds at once, one with [metrics] on and
// scraped every o.scrape (1 s by default; Prometheus' usual interval is 15
// to 60 s; 0: not scraped, the cost of recording alone), one with metrics
// off, and alternates each call between them, the first of each pair
// changing every round: both see the same machine at the same time, so
// their medians compare.
func benchMetricsOverhead(ctx context.Context, o options, rec func(name, side string, v float64)) (scrapes []float64, err error) {
	fmt.Fprintf(os.Stderr, "husk-bench: metrics overhead: %d RunPodSandbox and %d CreateContainer on each side\n", o.n, o.n)
	daemons := map[string]*runtimeUnderTest{}
	for i, side := range []string{metricsOff, metricsOn} {
		oo := o
		if side == metricsOn {
			oo.huskConfig = "[metrics]\naddress = \"127.0.0.1:0\"\n"
		}
		r, err := startRuntime(ctx, "husk", oo, 4+i, false)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", side, err)
		}
		defer r.close(o.keep)
		daemons[side] = r
	}
	addr, err := logValue(daemons[metricsOn].log.Name(), "metrics serving", "address")
	if err != nil {
		return nil, err
	}
	stopScraping := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); scrapes = scrapeEvery(o.scrape, "http://"+addr+"/metrics", stopScraping) }()
	defer func() { close(stopScraping); wg.Wait() }()

	const warmup = 3
	order := func(i int) []string {
		if i%2 == 0 {
			return []string{metricsOff, metricsOn}
		}
		return []string{metricsOn, metricsOff}
	}
	pods := map[string][]string{}
	for i := 0; i < o.n+warmup; i++ {
		for _, side := range order(i) {
			r := daemons[side]
			t := time.Now()
			resp, err := r.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: r.podConfig("mo", i)})
			if err != nil {
				return nil, fmt.Errorf("%s: RunPodSandbox: %w", side, err)
			}
			if i >= warmup {
				rec("RunPodSandbox", side, ms(time.Since(t)))
			}
			pods[side] = append(pods[side], resp.PodSandboxId)
		}
	}
	for side, ids := range pods {
		for _, id := range ids {
			if err := removePod(ctx, daemons[side], id); err != nil {
				return nil, err
			}
		}
	}

	podOf, cfgOf := map[string]string{}, map[string]*runtimeapi.PodSandboxConfig{}
	for side, r := range daemons {
		images := runtimeapi.NewImageServiceClient(r.conn)
		if _, err := images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: busyboxRef}}); err != nil {
			return nil, fmt.Errorf("%s: pull %s: %w", side, busyboxRef, err)
		}
		cfgOf[side] = r.podConfig("moc", 0)
		resp, err := r.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfgOf[side]})
		if err != nil {
			return nil, fmt.Errorf("%s: RunPodSandbox: %w", side, err)
		}
		podOf[side] = resp.PodSandboxId
	}
	for i := 0; i < o.n+warmup; i++ {
		for _, side := range order(i) {
			r := daemons[side]
			t := time.Now()
			_, err := r.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podOf[side],
				Config: sleeperConfig(fmt.Sprintf("c%d", i)), SandboxConfig: cfgOf[side]})
			if err != nil {
				return nil, fmt.Errorf("%s: CreateContainer: %w", side, err)
			}
			if i >= warmup {
				rec("CreateContainer", side, ms(time.Since(t)))
			}
		}
	}
	for side, id := range podOf {
		if err := removePod(ctx, daemons[side], id); err != nil {
			return nil, err
		}
	}
	return scrapes, nil
}

func removePod(ctx context.Context, r *runtimeUnderTest, id string) error {
	if _, err := r.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		return fmt.Errorf("StopPodSandbox: %w", err)
	}
	if _, err := r.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		return fmt.Errorf("RemovePodSandbox: %w", err)
	}
	return nil
}

// scrapeEvery GETs url every interval until stop and returns how long
// each scrape took, in ms. A zero interval scrapes nothing.
func scrapeEvery(interval time.Duration, url string, stop <-chan struct{}) []float64 {
	var took []float64
	if interval <= 0 {
		<-stop
		return nil
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	client := &http.Client{Timeout: 5 * time.Second}
	for {
		select {
		case <-stop:
			return took
		case <-tick.C:
		}
		t := time.Now()
		resp, err := client.Get(url)
		if err != nil {
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			took = append(took, ms(time.Since(t)))
		}
	}
}

// logValue finds key=value on the text log line with msg, waiting for it.
func logValue(path, msg, key string) (string, error) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		f, err := os.Open(path)
		if err != nil {
			return "", err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if !strings.Contains(sc.Text(), `msg="`+msg+`"`) {
				continue
			}
			for _, field := range strings.Fields(sc.Text()) {
				if v, ok := strings.CutPrefix(field, key+"="); ok {
					f.Close()
					return v, nil
				}
			}
		}
		f.Close()
		time.Sleep(50 * time.Millisecond)
	}
	return "", fmt.Errorf("no %q line with %s in %s", msg, key, path)
}

// printMetricsOverhead prints the scenario's table.
func printMetricsOverhead(o options, results map[string]*result, scrapes []float64) []*result {
	scraped := "not scraped"
	if o.scrape > 0 {
		scraped = "scraped every " + o.scrape.String()
	}
	fmt.Printf("\nmetrics overhead, n=%d: two huskds in the same run, each call alternated between them; \"on\" serves /metrics, %s\n\n", o.n, scraped)
	fmt.Printf("%-32s %12s %12s %12s %12s %10s %12s\n", "scenario", "off p50", "on p50", "off p90", "on p90", "on/off p50", "paired p50")
	var list []*result
	for _, name := range metricsScenarios {
		r := results["metrics overhead: "+name]
		if r == nil {
			continue
		}
		list = append(list, r)
		off50, on50 := percentile(r.Samples[metricsOff], 50), percentile(r.Samples[metricsOn], 50)
		ratio := "-"
		if off50 > 0 {
			ratio = fmt.Sprintf("%.3f", on50/off50)
		}
		fmt.Printf("%-32s %12s %12s %12s %12s %10s %12.3f\n", name, format(off50, "ms"), format(on50, "ms"),
			format(percentile(r.Samples[metricsOff], 90), "ms"), format(percentile(r.Samples[metricsOn], 90), "ms"), ratio,
			pairedRatio(r.Samples[metricsOff], r.Samples[metricsOn]))
	}
	fmt.Println("paired p50: the median of on/off over the rounds, each round's two calls made back to back.")
	fmt.Printf("\n%d scrapes during the scenario, median %s, p90 %s\n", len(scrapes), format(percentile(scrapes, 50), "ms"), format(percentile(scrapes, 90), "ms"))
	return list
}

// pairedRatio is the median of on[i]/off[i]: the calls of one round ran
// back to back, so the machine's load drifts out of each ratio.
func pairedRatio(off, on []float64) float64 {
	var r []float64
	for i := range min(len(off), len(on)) {
		if off[i] > 0 {
			r = append(r, on[i]/off[i])
		}
	}
	return percentile(r, 50)
}
