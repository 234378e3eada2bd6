package container

import (
	"testing"
	"time"
)

func TestKeyedMutex(t *testing.T) {
	var k keyedMutex
	unlockA := k.lock("a")
	// Another key is free while "a" is held.
	unlockB := k.lock("b")
	unlockB()

	got := make(chan struct{})
	go func() {
		unlock := k.lock("a")
		close(got)
		unlock()
	}()
	// The waiter is counted before it blocks: wait for that, then make
	// sure it has not got the lock.
	deadline := time.Now().Add(10 * time.Second)
	for users := 0; users != 2; {
		if time.Now().After(deadline) {
			t.Fatal("the second locker of \"a\" never came")
		}
		k.mu.Lock()
		users = k.locks["a"].users
		k.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	select {
	case <-got:
		t.Fatal("\"a\" was locked twice at once")
	default:
	}
	unlockA()
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter on \"a\" never got it")
	}
	// Once nobody holds or waits, no mutex is kept.
	for {
		k.mu.Lock()
		n := len(k.locks)
		k.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d mutexes kept after every unlock", n)
		}
		time.Sleep(time.Millisecond)
	}
}
