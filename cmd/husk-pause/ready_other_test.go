//go:build !amd64

package main

import "testing"

// waitReady: elsewhere husk-pause waits on os/signal, and nothing outside
// the process shows when its handlers are in place.
func waitReady(t *testing.T, pid int) {
	t.Helper()
	t.Skipf("husk-pause %d: its readiness shows only on amd64 (its main thread in pause(2))", pid)
}
