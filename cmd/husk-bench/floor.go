package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The no-op server: a gRPC server in a process of its own that
// answers ListPodSandbox, ListContainers and ImageFsInfo with bytes
// recorded from huskd's own answers, doing nothing else per call (no
// decoding of the request, no encoding of the answer). Timed against
// containerd like the runtimes, its rows are the best ratio any CRI server
// reaches for these calls on this machine with gRPC-Go: what is left is
// the client, HTTP/2 and the socket.

// floorCalls are the polled calls the no-op server answers.
var floorCalls = []string{"node: ListPodSandbox", "node: ListPodSandbox, answer only", "node: ListContainers",
	"node: ListContainers, answer only", "node: ImageFsInfo"}

// floorSuffix names the no-op server's rows.
const floorSuffix = " [no-op]"

// floorMethods are the methods it serves: the file each answer is in.
var floorMethods = []string{"ListPodSandbox", "ListContainers", "ImageFsInfo"}

// rawFrame is a message as its bytes, both ways.
type rawFrame struct{ b []byte }

// frameCodec passes frames through untouched.
type frameCodec struct{}

func (frameCodec) Marshal(v any) ([]byte, error) { return v.(*rawFrame).b, nil }
func (frameCodec) Unmarshal(data []byte, v any) error {
	v.(*rawFrame).b = data
	return nil
}
func (frameCodec) Name() string { return "proto" }

// serveFloor runs the no-op server on socket until killed, with the
// answers in dir.
func serveFloor(socket, dir string) error {
	answers := map[string][]byte{}
	for _, m := range floorMethods {
		b, err := os.ReadFile(filepath.Join(dir, m))
		if err != nil {
			return err
		}
		answers[m] = b
	}
	l, err := net.Listen("unix", socket)
	if err != nil {
		return err
	}
	srv := grpc.NewServer(grpc.ForceServerCodec(frameCodec{}), grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(stream)
		var req rawFrame
		if err := stream.RecvMsg(&req); err != nil {
			return err
		}
		answer, ok := answers[path.Base(method)]
		if !ok {
			// A plain error (gRPC's Unknown): only internal/cri makes
			// gRPC statuses (internal/archtest).
			return fmt.Errorf("%s: not served by the no-op server", method)
		}
		return stream.SendMsg(&rawFrame{b: answer})
	}))
	return srv.Serve(l)
}

// startFloor records huskd's answers into dir and starts the no-op
// server on them, as a process of its own (this binary with -grpc-floor);
// its rows are recorded on husk's side.
func startFloor(ctx context.Context, husk *runtimeUnderTest, dir string) (*runtimeUnderTest, func(), error) {
	answers := map[string]func() (proto.Message, error){
		"ListPodSandbox": func() (proto.Message, error) {
			return husk.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
		},
		"ListContainers": func() (proto.Message, error) {
			return husk.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
		},
		"ImageFsInfo": func() (proto.Message, error) {
			return runtimeapi.NewImageServiceClient(husk.conn).ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
		},
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	for _, m := range floorMethods {
		resp, err := answers[m]()
		if err != nil {
			return nil, nil, fmt.Errorf("record %s: %w", m, err)
		}
		b, err := proto.Marshal(resp)
		if err != nil {
			return nil, nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, m), b, 0o600); err != nil {
			return nil, nil, err
		}
	}
	socket := filepath.Join(dir, "floor.sock")
	cmd := exec.Command(os.Args[0], "-grpc-floor", socket, "-grpc-floor-data", dir)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	stop := func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(socket); err == nil {
			break
		}
		if time.Now().After(deadline) {
			stop()
			return nil, nil, errors.New("no-op server: no socket")
		}
	}
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		stop()
		return nil, nil, err
	}
	floor := &runtimeUnderTest{side: "husk", conn: conn, rt: runtimeapi.NewRuntimeServiceClient(conn)}
	return floor, func() { conn.Close(); stop() }, nil
}

// timeFloor times the no-op server's calls against containerd's, as
// timePolledCalls times the runtimes', in rows of their own.
func timeFloor(ctx context.Context, floor, ctrd *runtimeUnderTest, pods int, rec nodeRecord) error {
	var calls []polledCall
	for _, c := range polledCalls(ctx) {
		if slices.Contains(floorCalls, c.name) {
			c.name += floorSuffix
			calls = append(calls, c)
		}
	}
	return timeCalls(ctx, calls, []*runtimeUnderTest{floor, ctrd}, pods, rec)
}

// timeZeroWork starts the no-op server on husk's answers and times it
// against containerd; without both runtimes there is nothing to compare.
func timeZeroWork(ctx context.Context, rts []*runtimeUnderTest, pods int, rec nodeRecord) error {
	var husk, ctrd *runtimeUnderTest
	for _, r := range rts {
		switch r.side {
		case "husk":
			husk = r
		case "containerd":
			ctrd = r
		}
	}
	if husk == nil || ctrd == nil {
		return nil
	}
	floor, stop, err := startFloor(ctx, husk, filepath.Join(husk.dir, "no-op"))
	if err != nil {
		return fmt.Errorf("no-op server: %w", err)
	}
	defer stop()
	return timeFloor(ctx, floor, ctrd, pods, rec)
}
