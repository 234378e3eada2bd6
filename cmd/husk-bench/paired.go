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
	{delFloorRow, 0},
}

// delFloorRow is the DEL floor's row: its time in the husk columns.
const delFloorRow = "StopPodSandbox [bridge] paired [DEL floor]"

// benchSandboxesPaired runs containerd and huskd at once, on [bridge]
// networks of their own, and alternates each RunPodSandbox, then each
// StopPodSandbox, between them, the first of each pair changing every
// round. The other sandbox scenarios time one runtime after the other,
// minutes apart, and on a machine whose load moves (other work on 2 cores)
// their ratio moves with it; here both see the same machine at the same
// time. Each StopPodSandbox round also times the floor's DEL (delfloor.go)
// in the same rounds (laneOrder), on pods made after the RunPodSandbox
// rounds. It returns each round's husk/containerd ratio per scenario, and
// the floor's over containerd.
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
	floor, err := newDelFloor()
	if err != nil {
		return nil, fmt.Errorf("paired: DEL floor: %w", err)
	}
	defer floor.close()
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
	for _, sc := range pairedScenarios[:2] {
		lanes := sides
		if sc.name == pairedScenarios[1].name {
			lanes = append(sides[:2:2], delFloorSide)
			// The floor's pods, untimed, between the Run and the Stop
			// rounds: none of its work overlaps a timed call.
			for i := range o.n + warmup {
				if err := floor.add(ctx, i); err != nil {
					return nil, fmt.Errorf("paired: %w", err)
				}
			}
		}
		for i := 0; i < o.n+warmup; i++ {
			took := map[string]float64{}
			for _, j := range laneOrder(len(lanes), i) {
				side := lanes[j]
				t := time.Now()
				var err error
				if side == delFloorSide {
					err = floor.del(ctx, i)
				} else {
					err = call[sc.name](daemons[side], i)
				}
				if err != nil {
					return nil, fmt.Errorf("paired: %s: %s: %w", side, sc.name, err)
				}
				took[side] = ms(time.Since(t))
			}
			if i < warmup {
				continue
			}
			for _, side := range sides {
				rec(sc.name, side, took[side])
			}
			ratios[sc.name] = append(ratios[sc.name], took["husk"]/took["containerd"])
			if v, ok := took[delFloorSide]; ok {
				rec(delFloorRow, "husk", v)
				rec(delFloorRow, "containerd", took["containerd"])
				ratios[delFloorRow] = append(ratios[delFloorRow], v/took["containerd"])
			}
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
		target := ""
		if sc.target > 0 {
			target = fmt.Sprintf(" target <= %.2f", sc.target)
		}
		fmt.Printf("%-44s median of per-round ratios %.2f (n=%d, p10 %.2f, p90 %.2f)%s\n", sc.name,
			r[len(r)/2], len(r), r[len(r)/10], r[len(r)*9/10], target)
	}
	fmt.Println("[DEL floor]: in the husk columns, the CNI DEL of a pod's network alone (bridge + host-local, as huskd runs it),")
	fmt.Println("timed in the same rounds: what any runtime's StopPodSandbox runs on this network")
}
