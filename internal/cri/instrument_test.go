package cri

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/metrics"
)

type call struct {
	method, code string
}

type fakeCalls struct {
	mu    sync.Mutex
	calls []call
}

func (f *fakeCalls) ObserveCall(method, code string, _ time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call{method, code})
}

func jsonLines(t *testing.T, b *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

func TestUnaryInstrument(t *testing.T) {
	auth := &runtimeapi.AuthConfig{Username: "u", Password: "s3cret-pw", Auth: "YXV0aC1zZWNyZXQ=", IdentityToken: "id-tok-secret", RegistryToken: "reg-tok-secret"}
	tests := []struct {
		name      string
		method    string
		req, resp any
		err       error
		panics    bool
		wantLevel string
		wantCode  codes.Code
		wantAttrs map[string]string
	}{
		{name: "run pod", method: "RunPodSandbox",
			req:       &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "ns"}}, RuntimeHandler: "crun"},
			resp:      &runtimeapi.RunPodSandboxResponse{PodSandboxId: "abc"},
			wantLevel: "INFO", wantCode: codes.OK,
			wantAttrs: map[string]string{"pod_sandbox_id": "abc", "pod_name": "web", "pod_namespace": "ns", "handler": "crun", "code": "OK"}},
		{name: "create container names both", method: "CreateContainer",
			req:       &runtimeapi.CreateContainerRequest{PodSandboxId: "pod1", Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app"}, Image: &runtimeapi.ImageSpec{Image: "busybox"}}},
			resp:      &runtimeapi.CreateContainerResponse{ContainerId: "c1"},
			wantLevel: "INFO", wantCode: codes.OK,
			wantAttrs: map[string]string{"pod_sandbox_id": "pod1", "container_id": "c1", "container_name": "app", "image": "busybox"}},
		{name: "pull names the image, not the auth", method: "PullImage",
			req:       &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "busybox:1"}, Auth: auth},
			resp:      &runtimeapi.PullImageResponse{ImageRef: "sha256:1"},
			wantLevel: "INFO", wantCode: codes.OK,
			wantAttrs: map[string]string{"image": "busybox:1", "image_ref": "sha256:1"}},
		{name: "remove image", method: "RemoveImage",
			req:       &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: "busybox:1"}},
			resp:      &runtimeapi.RemoveImageResponse{},
			wantLevel: "INFO", wantCode: codes.OK, wantAttrs: map[string]string{"image": "busybox:1"}},
		{name: "failed stop", method: "StopContainer",
			req:       &runtimeapi.StopContainerRequest{ContainerId: "c2"},
			err:       status.Error(codes.NotFound, "container c2 not found"),
			wantLevel: "INFO", wantCode: codes.NotFound,
			wantAttrs: map[string]string{"container_id": "c2", "code": "NotFound", "error": "container c2 not found"}},
		{name: "read at debug", method: "ListPodSandbox", req: &runtimeapi.ListPodSandboxRequest{},
			resp: &runtimeapi.ListPodSandboxResponse{}, wantLevel: "DEBUG", wantCode: codes.OK},
		{name: "failed read at info", method: "ContainerStatus", req: &runtimeapi.ContainerStatusRequest{ContainerId: "x"},
			err: status.Error(codes.NotFound, "nope"), wantLevel: "INFO", wantCode: codes.NotFound},
		{name: "panic is Internal", method: "StartContainer", req: &runtimeapi.StartContainerRequest{ContainerId: "c3"},
			panics: true, wantLevel: "INFO", wantCode: codes.Internal, wantAttrs: map[string]string{"container_id": "c3", "code": "Internal"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			calls := &fakeCalls{}
			in := Instrument{Log: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), Calls: calls}
			_, err := in.Unary()(context.Background(), tt.req, &grpc.UnaryServerInfo{FullMethod: "/runtime.v1.RuntimeService/" + tt.method},
				func(context.Context, any) (any, error) {
					if tt.panics {
						panic("boom")
					}
					return tt.resp, tt.err
				})
			if status.Code(err) != tt.wantCode {
				t.Errorf("code %v, want %v", status.Code(err), tt.wantCode)
			}
			if len(calls.calls) != 1 || calls.calls[0] != (call{tt.method, tt.wantCode.String()}) {
				t.Errorf("recorded %v, want one %s %v", calls.calls, tt.method, tt.wantCode)
			}
			if strings.Contains(buf.String(), "secret") || strings.Contains(buf.String(), auth.Auth) {
				t.Errorf("a credential reached the log:\n%s", buf.String())
			}
			var line map[string]any
			for _, l := range jsonLines(t, &buf) {
				if l["msg"] == "cri call" {
					line = l
				}
			}
			if line == nil {
				t.Fatalf("no cri call line in:\n%s", buf.String())
			}
			if line["level"] != tt.wantLevel || line["method"] != tt.method || line["duration"] == nil {
				t.Errorf("line %v: want level %s, method %s and a duration", line, tt.wantLevel, tt.method)
			}
			for k, v := range tt.wantAttrs {
				if line[k] != v {
					t.Errorf("%s = %v, want %q (line %v)", k, line[k], v, line)
				}
			}
		})
	}
}

type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (f fakeStream) Context() context.Context { return f.ctx }

func TestStreamInstrument(t *testing.T) {
	var buf bytes.Buffer
	calls := &fakeCalls{}
	in := Instrument{Log: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), Calls: calls}
	info := &grpc.StreamServerInfo{FullMethod: "/runtime.v1.RuntimeService/GetContainerEvents", IsServerStream: true}
	err := in.Stream()(nil, fakeStream{ctx: context.Background()}, info, func(any, grpc.ServerStream) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	err = in.Stream()(nil, fakeStream{ctx: context.Background()}, info, func(any, grpc.ServerStream) error { panic("boom") })
	if status.Code(err) != codes.Internal {
		t.Errorf("panicking stream: %v, want Internal", err)
	}
	want := []call{{"GetContainerEvents", "OK"}, {"GetContainerEvents", "Internal"}}
	if len(calls.calls) != 2 || calls.calls[0] != want[0] || calls.calls[1] != want[1] {
		t.Errorf("recorded %v, want %v", calls.calls, want)
	}
	var ended int
	for _, l := range jsonLines(t, &buf) {
		if l["msg"] == "cri call" && l["method"] == "GetContainerEvents" {
			ended++
		}
	}
	if ended != 2 {
		t.Errorf("%d end lines for 2 streams:\n%s", ended, buf.String())
	}
}

func TestMethodsCoverBothServices(t *testing.T) {
	got := map[string]bool{}
	for _, m := range Methods() {
		got[m] = true
	}
	for _, m := range []string{"RunPodSandbox", "CreateContainer", "Exec", "Attach", "PortForward", "GetContainerEvents", "PullImage", "ImageFsInfo"} {
		if !got[m] {
			t.Errorf("Methods() lacks %s", m)
		}
	}
}

// What a call pays for being counted: the interceptor with metrics off and
// on, its line going to a discarding handler at Info.
func BenchmarkUnaryInstrument(b *testing.B) {
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	info := &grpc.UnaryServerInfo{FullMethod: "/runtime.v1.RuntimeService/RunPodSandbox"}
	req := &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "web"}}}
	resp := &runtimeapi.RunPodSandboxResponse{PodSandboxId: "abc"}
	handler := func(context.Context, any) (any, error) { return resp, nil }
	for _, bb := range []struct {
		name  string
		calls CallRecorder
	}{{"metrics-off", nil}, {"metrics-on", metrics.New(Methods())}} {
		in := Instrument{Log: log, Calls: bb.calls}.Unary()
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = in(context.Background(), req, info, handler)
			}
		})
	}
}
