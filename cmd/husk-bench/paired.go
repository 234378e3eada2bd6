package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// pairedScenarios are the calls the paired sandbox scenario times, with
// issue 15's targets (husk/containerd).
var pairedScenarios = []struct {
	name   string
	target float64
}{
	{"RunPodSandbox [bridge] paired", 0.25},
	{"StopPodSandbox [bridge] paired", 0.33},
}

// benchSandboxesPaired runs containerd and huskd at once, on [bridge]
// networks of their own, and alternates each RunPodSandbox, then each
// StopPodSandbox, between them, the first of each pair changing every
// round. The other sandbox scenarios time one runtime after the other,
// minutes apart, and on a machine whose load moves (other work on 2 cores)
// their ratio moves with it; here both see the same machine at the same
// time. It returns each round's husk/containerd ratio per scenario.
func benchSandboxesPaired(ctx context.Context, o options, rec func(name, side string, v float64)) (map[string][]float64, error) {
	fmt.Fprintf(os.Stderr, "husk-bench: paired: %d sandboxes on each side\n", o.n)
	sides := []string{"containerd", "husk"}
	daemons := map[string]*runtimeUnderTest{}
	for i, side := range sides {
		r, err := startRuntime(ctx, side, o, 6+i, false)
		if err != nil {
			return nil, fmt.Errorf("paired: %s: %w", side, err)
		}
		defer r.close(o.keep)
		daemons[side] = r
	}
	const warmup = 3
	pods := map[string][]string{}
	call := map[string]func(r *runtimeUnderTest, i int) error{
		pairedScenarios[0].name: func(r *runtimeUnderTest, i int) error {
			resp, err := r.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: r.podConfig("pair", i)})
			if err == nil {
				pods[r.side] = append(pods[r.side], resp.PodSandboxId)
			}
			return err
		},
		pairedScenarios[1].name: func(r *runtimeUnderTest, i int) error {
			_, err := r.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pods[r.side][i]})
			return err
		},
	}
	ratios := map[string][]float64{}
	for _, sc := range pairedScenarios {
		for i := 0; i < o.n+warmup; i++ {
			took := map[string]float64{}
			for j := range sides {
				side := sides[(i+j)%2]
				t := time.Now()
				if err := call[sc.name](daemons[side], i); err != nil {
					return nil, fmt.Errorf("paired: %s: %s: %w", side, sc.name, err)
				}
				took[side] = ms(time.Since(t))
			}
			if i < warmup {
				continue
			}
			for side, v := range took {
				rec(sc.name, side, v)
			}
			ratios[sc.name] = append(ratios[sc.name], took["husk"]/took["containerd"])
		}
	}
	for side, ids := range pods {
		for _, id := range ids {
			if _, err := daemons[side].rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
				return nil, fmt.Errorf("paired: %s: RemovePodSandbox: %w", side, err)
			}
		}
	}
	return ratios, nil
}

// printPaired prints the median of each paired scenario's per-round
// ratios, which a drift of the machine's load during the run moves less
// than the ratio of the two medians.
func printPaired(ratios map[string][]float64) {
	if len(ratios) == 0 {
		return
	}
	fmt.Println("\npaired: containerd and huskd running at once, each call alternated between them")
	for _, sc := range pairedScenarios {
		r := append([]float64(nil), ratios[sc.name]...)
		if len(r) == 0 {
			continue
		}
		sort.Float64s(r)
		fmt.Printf("%-32s median of per-round ratios %.2f (n=%d, p10 %.2f, p90 %.2f) target <= %.2f\n", sc.name,
			r[len(r)/2], len(r), r[len(r)/10], r[len(r)*9/10], sc.target)
	}
}
