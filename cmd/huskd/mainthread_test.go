package main

import (
	"runtime"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// With the main goroutine locked to the main thread by init, no other
// goroutine runs there; without it the scheduler uses that thread like
// any other and some of these would land on it.
func TestNoGoroutineOnTheMainThread(t *testing.T) {
	pid := unix.Getpid()
	var wg sync.WaitGroup
	var mu sync.Mutex
	onMain := 0
	for range 2000 {
		wg.Go(func() {
			for range 3 {
				if unix.Gettid() == pid {
					mu.Lock()
					onMain++
					mu.Unlock()
				}
				runtime.Gosched()
			}
		})
	}
	wg.Wait()
	if onMain > 0 {
		t.Errorf("goroutines ran on the main thread %d times", onMain)
	}
}
