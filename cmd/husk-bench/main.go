// Command husk-bench drives the same CRI calls against huskd and, in the
// same run, against Debian's containerd, and prints medians, p90s and the
// ratio husk/containerd. Each runtime gets its own temporary dirs, socket,
// CNI bridge and subnet, all removed at the end.
//
// RunPodSandbox and StopPodSandbox are also timed with both runtimes up at
// once, each call alternated between them (-run paired, or -only paired, runs only that).
//
// It also measures what metrics cost husk: two huskds, [metrics] off and on,
// with each call alternated between them (-only metrics runs only that).
//
// The full-node scenario of issue 15 (-node-pods pods of one container
// each; -node-only runs only it) reports the daemons' memory, making and
// removing all pods, and the calls the kubelet polls on a full node.
//
// The big images of issue 15 (-big-n cold pulls of an image of -big-layers
// layers of -big-mib MiB, gzip and zstd; -big-only runs only them) run both
// runtimes side by side and this machine's floor in the same rounds.
//
// -run picks the scenarios (a comma list of sandboxes, images, containers,
// node, big, metrics, infra, paired; all by default).
//
//	husk-bench -huskd bin/huskd -pause bin/husk-pause [-n 30] [-pods 20] [-node-pods 110] [-node-only] [-run containers,node] [-only husk|containerd|metrics|paired] [-scrape 1s] [-json out.json]
//	           [-big-n 5] [-big-layers 8] [-big-mib 64] [-big-only] [-husk-downloads N]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"
)

type options struct {
	huskd, pause string
	registry     string // host:port of the bench's image registry
	n, pods      int
	nodePods     int
	nodeOnly     bool
	// run lists the scenarios to run; empty runs all.
	run     map[string]bool
	only    string
	jsonOut string
	keep    bool
	// debug runs huskd with --log-level debug (the phases of each call).
	debug bool
	// profile, when set, is where the node scenario writes huskd's heap
	// profile at full load and its CPU profile of the polled calls.
	profile string
	// huskConfig is TOML appended to huskd's config (tables only).
	huskConfig string
	// scrape is how often the metrics overhead scenario scrapes.
	scrape time.Duration
	// The big image scenario: bigN cold pulls of each image of bigLayers
	// layers of bigMiB MiB (0: skipped); bigOnly runs only it.
	bigN, bigLayers, bigMiB int
	bigOnly                 bool
	// huskDownloads is huskd's max_concurrent_downloads (0: its default).
	huskDownloads int
}

// result is one scenario's samples per runtime.
type result struct {
	Name    string               `json:"name"`
	Unit    string               `json:"unit"`
	Samples map[string][]float64 `json:"samples"`
	// Target is the wanted upper bound of husk/containerd, 0 for none;
	// Limit the wanted upper bound of husk's median, in Unit, 0 for none.
	Target float64 `json:"target,omitempty"`
	Limit  float64 `json:"limit,omitempty"`
}

func main() {
	var o options
	flag.StringVar(&o.huskd, "huskd", "bin/huskd", "huskd binary")
	flag.StringVar(&o.pause, "pause", "bin/husk-pause", "husk-pause binary")
	flag.IntVar(&o.n, "n", 30, "sandboxes per latency scenario")
	flag.IntVar(&o.pods, "pods", 20, "pods running for the memory scenario")
	flag.IntVar(&o.nodePods, "node-pods", 110, "pods of the full-node scenario (0 skips it)")
	flag.BoolVar(&o.nodeOnly, "node-only", false, "run only the full-node scenario")
	flag.StringVar(&o.only, "only", "", "run one side only (husk or containerd), or only the metrics overhead (metrics), or only the paired sandbox calls (paired)")
	flag.StringVar(&o.jsonOut, "json", "", "also write the results as JSON here")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary dirs (debugging)")
	flag.StringVar(&o.profile, "profile", "", "node scenario: write huskd's heap profile with all pods up, and a CPU profile of the polled calls, to this dir")
	flag.BoolVar(&o.debug, "debug", false, "run huskd with --log-level debug (with -keep: its log keeps the phases of each call)")
	flag.DurationVar(&o.scrape, "scrape", time.Second, "metrics overhead: scrape /metrics this often (0: never)")
	flag.IntVar(&o.bigN, "big-n", 5, "cold pulls of each big image per runtime (0 skips them)")
	flag.IntVar(&o.bigLayers, "big-layers", 8, "layers of the big images")
	flag.IntVar(&o.bigMiB, "big-mib", 64, "MiB of incompressible data per layer of the big images")
	flag.BoolVar(&o.bigOnly, "big-only", false, "run only the big image scenario")
	flag.IntVar(&o.huskDownloads, "husk-downloads", 0, "huskd's max_concurrent_downloads (0: its default)")
	runList := flag.String("run", "", "scenarios to run, a comma list of "+strings.Join(scenarioNames, ", ")+" (default: all)")
	floorSocket := flag.String("grpc-floor", "", "internal: serve the node scenario's no-op gRPC server on this socket")
	floorData := flag.String("grpc-floor-data", "", "internal: the no-op server's recorded answers")
	flag.Parse()
	if *floorSocket != "" {
		if err := serveFloor(*floorSocket, *floorData); err != nil {
			fmt.Fprintf(os.Stderr, "husk-bench: no-op server: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if o.only == "paired" { // -only paired is -run paired
		o.only, *runList = "", "paired"
	}
	var err error
	if o.run, err = parseRun(*runList, o.nodeOnly, o.bigOnly); err != nil {
		fmt.Fprintf(os.Stderr, "husk-bench: %v\n", err)
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "husk-bench: %v\n", err)
		os.Exit(1)
	}
}

// scenarioNames are the scenarios -run picks from.
var scenarioNames = []string{"sandboxes", "images", "containers", "node", "big", "metrics", "infra", "paired"}

// parseRun reads -run; -node-only is -run node, -big-only -run big.
func parseRun(list string, nodeOnly, bigOnly bool) (map[string]bool, error) {
	if bigOnly {
		list = "big"
	}
	if nodeOnly {
		list = "node"
	}
	run := map[string]bool{}
	if list == "" {
		list = strings.Join(scenarioNames, ",")
	}
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if !slices.Contains(scenarioNames, name) {
			return nil, fmt.Errorf("-run: unknown scenario %q (want %s)", name, strings.Join(scenarioNames, ", "))
		}
		run[name] = true
	}
	return run, nil
}

// wants tells whether the scenario is to run.
func (o options) wants(scenario string) bool {
	if o.only == "metrics" {
		return scenario == "metrics"
	}
	return o.run[scenario]
}

func run(o options) error {
	for _, p := range []*string{&o.huskd, &o.pause} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	results := map[string]*result{}
	addLimited := func(name, unit, side string, target, limit float64, v ...float64) {
		r := results[name]
		if r == nil {
			r = &result{Name: name, Unit: unit, Samples: map[string][]float64{}, Target: target, Limit: limit}
			results[name] = r
		}
		r.Samples[side] = append(r.Samples[side], v...)
	}
	add := func(name, unit, side string, target float64, v ...float64) {
		addLimited(name, unit, side, target, 0, v...)
	}
	networks := []struct {
		name string
		masq bool
	}{{"[bridge]", false}, {"[bridge+masq]", true}}
	var order []string
	for _, n := range networks {
		for _, call := range []string{"RunPodSandbox", "StopPodSandbox", "RemovePodSandbox"} {
			order = append(order, call+" "+n.name)
		}
	}
	for _, sc := range pairedScenarios {
		order = append(order, sc.name)
	}
	order = append(order, "per-pod private memory")
	for _, row := range []string{"[runc]", "[husk default]"} {
		for _, name := range []string{"Create+StartContainer", "StopContainer (timeout 0)", "RemoveContainer, later",
			"RemoveContainer, after stop", "Stop+RemoveContainer"} {
			order = append(order, name+" "+row)
		}
	}
	for _, row := range floorRows {
		order = append(order, "Create+StartContainer "+row)
	}
	order = append(order, "per-pod memory, 1 container", "monitor private memory", "PullImage cold (5 x 10 MiB)", "PullImage warm (layers present)",
		listImagesScenario, "infra binary size", "infra RssAnon", "infra threads")
	for _, row := range nodeRows {
		order = append(order, row.name)
	}
	for _, c := range []string{"gzip", "zstd"} {
		order = append(order, newBigRows(c, o.bigLayers, o.bigMiB).names()...)
	}
	imgs, err := startImages(o.wants("images"))
	if err != nil {
		return fmt.Errorf("bench images: %w", err)
	}
	defer imgs.close()
	o.registry = imgs.host
	big := o.bigN > 0 && o.wants("big") && (o.only == "" || o.bigOnly)
	if big {
		if err := imgs.buildBigImages(o.bigLayers, o.bigMiB); err != nil {
			return fmt.Errorf("bench images: %w", err)
		}
	}

	start := time.Now()
	if !o.wants("sandboxes") && !o.wants("images") && !o.wants("containers") && !o.wants("node") {
		networks = nil
	}
	if !o.wants("sandboxes") {
		networks = networks[:min(len(networks), 1)]
	}
	for ni, n := range networks {
		// The containers and the full node run on both runtimes at once,
		// once each has run the other scenarios of the first round, so that
		// each call to one is timed beside the same call to the other
		// (benchContainers, benchNodes).
		paired := ni == 0 && (o.wants("containers") || o.nodePods > 0 && o.wants("node"))
		var sides []*runtimeUnderTest
		for i, side := range []string{"containerd", "husk"} {
			if o.only != "" && o.only != side {
				continue
			}
			rt, err := startRuntime(ctx, side, o, i, n.masq)
			if err != nil {
				closeAll(sides, o.keep)
				return fmt.Errorf("%s: %w", side, err)
			}
			rec := func(name, unit string, target float64, v ...float64) { add(name, unit, side, target, v...) }
			if ni == 0 {
				err = pullBusybox(ctx, rt)
			}
			if err == nil && o.wants("sandboxes") {
				err = benchSandboxes(ctx, rt, o, n.name, ni == 0, rec)
			}
			if err == nil && ni == 0 && o.wants("images") {
				err = benchImagePulls(ctx, rt, imgs, rec)
			}
			if err == nil && paired {
				sides = append(sides, rt)
				continue
			}
			rt.close(o.keep)
			if err != nil {
				closeAll(sides, o.keep)
				return fmt.Errorf("%s %s: %w", side, n.name, err)
			}
		}
		if err := benchPaired(ctx, sides, o, results, add); err != nil {
			return err
		}
	}
	if big {
		if err := benchBigImages(ctx, o, imgs, addLimited); err != nil {
			return fmt.Errorf("big images: %w", err)
		}
	}
	var paired map[string][]float64
	if o.wants("paired") && o.only == "" {
		paired, err = benchSandboxesPaired(ctx, o, func(name, side string, v float64) {
			for _, sc := range pairedScenarios {
				if sc.name == name {
					add(name, "ms", side, sc.target, v)
				}
			}
		})
		if err != nil {
			return err
		}
	}
	var scrapes []float64
	if o.wants("metrics") && (o.only == "" || o.only == "metrics") {
		scrapes, err = benchMetricsOverhead(ctx, o, func(name, side string, v float64) { add("metrics overhead: "+name, "ms", side, 0, v) })
		if err != nil {
			return fmt.Errorf("metrics overhead: %w", err)
		}
	}
	if o.wants("infra") {
		if err := benchInfra(o, func(name, unit, side string, v ...float64) { add(name, unit, side, 0, v...) }); err != nil {
			return err
		}
	}

	fmt.Printf("\nhusk-bench: n=%d sandboxes per latency scenario, %d pods for memory, %d pods on the full node, %s in all\n",
		o.n, o.pods, o.nodePods, time.Since(start).Round(time.Second))
	var list []*result
	if o.only != "metrics" {
		list = printComparison(results, order)
		printPaired(paired)
	}
	if o.wants("metrics") && (o.only == "" || o.only == "metrics") {
		list = append(list, printMetricsOverhead(o, results, scrapes)...)
	}
	if o.jsonOut != "" {
		b, _ := json.MarshalIndent(list, "", "  ")
		if err := os.WriteFile(o.jsonOut, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// benchPaired runs the containers and the full node on the runtimes at
// once, then closes them.
func benchPaired(ctx context.Context, sides []*runtimeUnderTest, o options, results map[string]*result, add func(name, unit, side string, target float64, v ...float64)) error {
	defer closeAll(sides, o.keep)
	if len(sides) == 0 {
		return nil
	}
	if o.wants("containers") {
		err := benchContainers(ctx, sides, o, func(side, name, unit string, target float64, v ...float64) { add(name, unit, side, target, v...) })
		if err != nil {
			return fmt.Errorf("containers: %w", err)
		}
	}
	if o.nodePods > 0 && o.wants("node") {
		err := benchNodes(ctx, sides, o, func(side, name string, v ...float64) {
			for _, row := range nodeRows {
				if row.name == name {
					add(name, row.unit, side, row.target, v...)
					results[name].Limit = row.limit
				}
			}
		})
		if err != nil {
			return fmt.Errorf("node: %w", err)
		}
	}
	return nil
}

// closeAll closes the runtimes.
func closeAll(rts []*runtimeUnderTest, keep bool) {
	for _, r := range rts {
		r.close(keep)
	}
}

// printComparison prints husk against containerd.
func printComparison(results map[string]*result, order []string) []*result {
	fmt.Printf("\n%-44s %12s %12s %12s %12s %10s %s\n", "scenario", "husk p50", "husk p90", "ctrd p50", "ctrd p90", "ratio p50", "target")
	var list []*result
	for _, name := range order {
		r := results[name]
		if r == nil {
			continue
		}
		list = append(list, r)
		h50, h90 := percentile(r.Samples["husk"], 50), percentile(r.Samples["husk"], 90)
		c50, c90 := percentile(r.Samples["containerd"], 50), percentile(r.Samples["containerd"], 90)
		ratio, target := "-", ""
		if c50 > 0 && h50 > 0 && r.Unit != "x" {
			ratio = fmt.Sprintf("%.2f", h50/c50)
		}
		if r.Target > 0 {
			target = fmt.Sprintf("<= %.2f", r.Target)
		}
		if r.Limit > 0 {
			target = "<= " + format(r.Limit, r.Unit)
		}
		fmt.Printf("%-44s %12s %12s %12s %12s %10s %s\n", r.Name, format(h50, r.Unit), format(h90, r.Unit),
			format(c50, r.Unit), format(c90, r.Unit), ratio, target)
	}
	fmt.Println("\n[bridge]: bridge + host-local + portmap, the network of the issue's reference figures;")
	fmt.Println("[bridge+masq]: the same with the bridge plugin's per-pod masquerade (ipMasq), as containerd's sample config.")
	fmt.Println("The containerd columns of the infra rows are Debian's catatonit -P, the smallest packaged pause.")
	fmt.Println("Big images: each round pulls cold on both runtimes and runs the floor (decompress and write the layers, then")
	fmt.Println("syncfs, in husk-bench); \"pull / floor\" is the median of each round's pull time over that round's floor, the")
	fmt.Println("faster of parallel and sequential; the hashing floor also computes the two sha256 a verifying pull needs.")
	fmt.Println("[no-op]: in the husk columns, a gRPC server that answers with the bytes huskd answered and does nothing else")
	fmt.Println("(cmd/husk-bench/floor.go), timed against containerd again: its ratio is the best any CRI server reaches here.")
	fmt.Println("[runc floor], [crun floor]: in the husk columns, `runc run --detach` (`crun ...`) alone of containers huskd created,")
	fmt.Println("as its monitor runs it (cmd/husk-bench/runtimefloor.go), in the same rounds: what driving that runtime allows at all.")
	return list
}

func percentile(v []float64, p int) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	i := (len(s)*p + 99) / 100
	if i < 1 {
		i = 1
	}
	return s[i-1]
}

func format(v float64, unit string) string {
	if v == 0 {
		return "-"
	}
	switch unit {
	case "ms":
		return fmt.Sprintf("%.1f ms", v)
	case "x":
		return fmt.Sprintf("%.2f x", v)
	case "KiB":
		if v >= 1024 {
			return fmt.Sprintf("%.2f MiB", v/1024)
		}
		return fmt.Sprintf("%.0f KiB", v)
	default:
		return strings.TrimSpace(fmt.Sprintf("%.0f %s", v, unit))
	}
}
