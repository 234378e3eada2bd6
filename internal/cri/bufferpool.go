package cri

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
)

// bufferPoolExponents are the sizes (256 B, then each power of two from
// 4 KiB to 1 MiB) of the buffers the CRI server encodes its answers into
// and reads requests into. gRPC's default pool jumps from 32 KiB to 1 MiB
// and clears a reused buffer's whole capacity on every Get: a 110-pod
// ListContainers (~90 KiB) cleared 1 MiB per call, 9% of huskd's CPU
// under the kubelet's relist. With a size at each power of two it clears
// at most twice what it sends.
var bufferPoolExponents = []uint8{8, 12, 13, 14, 15, 16, 17, 18, 19, 20}

// BufferPool makes that pool gRPC's default and returns the server option
// with it. Both are needed: the server's option serves reads, while the
// proto codec encodes every answer into the default pool whatever the
// server's option says (grpc 1.85, encoding/proto codecV2.Marshal). Call
// it before any gRPC use.
func BufferPool() grpc.ServerOption {
	pool, err := mem.NewBinaryTieredBufferPool(bufferPoolExponents...)
	if err != nil {
		panic(fmt.Sprintf("cri: buffer pool: %v", err)) // the exponents are constants
	}
	experimental.SetDefaultBufferPool(pool)
	return experimental.BufferPool(pool)
}
