package main

import (
	"slices"
	"testing"
)

// Over a whole cycle every lane is first equally often and follows every
// other lane equally often.
func TestLaneOrderIsBalanced(t *testing.T) {
	for _, tc := range []struct{ n, cycle int }{{1, 1}, {2, 2}, {3, 6}, {4, 4}, {5, 10}, {6, 6}} {
		first := map[int]int{}
		follows := map[[2]int]int{}
		for round := range 2 * tc.cycle {
			row := laneOrder(tc.n, round)
			sorted := slices.Sorted(slices.Values(row))
			for k := range tc.n {
				if sorted[k] != k {
					t.Fatalf("n=%d round %d: %v is not each lane once", tc.n, round, row)
				}
			}
			first[row[0]]++
			for k := 1; k < tc.n; k++ {
				follows[[2]int{row[k-1], row[k]}]++
			}
		}
		for lane := range tc.n {
			if first[lane] != 2*tc.cycle/tc.n {
				t.Errorf("n=%d: lane %d first %d times in %d rounds", tc.n, lane, first[lane], 2*tc.cycle)
			}
		}
		// 2·cycle·(n-1) successions over n·(n-1) ordered pairs.
		want := 2 * tc.cycle / tc.n
		for a := range tc.n {
			for b := range tc.n {
				if a != b && follows[[2]int{a, b}] != want {
					t.Errorf("n=%d: lane %d follows lane %d %d times, want %d", tc.n, b, a, follows[[2]int{a, b}], want)
				}
			}
		}
	}
}
