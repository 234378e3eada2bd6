package main

// laneOrder is the order in which round takes n lanes: a Williams design,
// in which every lane follows every other lane equally often over a cycle
// of rounds (n for an even n, 2n for an odd n). A call leaves work behind
// that the kernel finishes after it returned (a killed container's
// namespaces and cgroups, a deleted veth's RCU callbacks): in a plain
// rotation each lane always follows the same other one and pays that
// lane's aftermath in every round.
func laneOrder(n, round int) []int {
	// The design's first row is 0, 1, n-1, 2, n-2, ...; row r adds r to
	// each lane, mod n.
	first := []int{0}
	for lo, hi := 1, n-1; len(first) < n; lo, hi = lo+1, hi-1 {
		first = append(first, lo)
		if len(first) < n {
			first = append(first, hi)
		}
	}
	row := make([]int, n)
	for k, lane := range first {
		row[k] = (lane + round) % n
	}
	if n%2 == 1 && (round/n)%2 == 1 {
		// An odd n needs the mirror rows too.
		for i, j := 0, n-1; i < j; i, j = i+1, j-1 {
			row[i], row[j] = row[j], row[i]
		}
	}
	return row
}
