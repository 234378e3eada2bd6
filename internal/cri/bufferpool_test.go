package cri

import (
	"testing"

	"google.golang.org/grpc/mem"
)

// TestBufferPoolTiers checks that a list answer's buffer is at most twice
// its size, where gRPC's default pool hands out (and clears) 1 MiB.
func TestBufferPoolTiers(t *testing.T) {
	pool, err := mem.NewBinaryTieredBufferPool(bufferPoolExponents...)
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{100, 5000, 40_000, 90_000, 200_000, 600_000} {
		buf := pool.Get(size)
		if len(*buf) != size || cap(*buf) > 2*size && cap(*buf) > 256 {
			t.Errorf("Get(%d): len %d cap %d, want len %d and cap <= %d", size, len(*buf), cap(*buf), size, 2*size)
		}
		pool.Put(buf)
	}
}
