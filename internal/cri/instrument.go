package cri

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// readOnly are the methods logged at Debug: the kubelet polls them.
var readOnly = map[string]bool{
	"Version": true, "Status": true, "RuntimeConfig": true,
	"PodSandboxStatus": true, "ListPodSandbox": true, "ContainerStatus": true, "ListContainers": true,
	"ContainerStats": true, "ListContainerStats": true, "PodSandboxStats": true, "ListPodSandboxStats": true,
	"ListImages": true, "ImageStatus": true, "ImageFsInfo": true, "ListMetricDescriptors": true,
	"ListPodSandboxMetrics": true, "GetContainerEvents": true,
	"StreamPodSandboxes": true, "StreamContainers": true, "StreamContainerStats": true, "StreamPodSandboxStats": true,
	"StreamPodSandboxMetrics": true, "StreamImages": true,
}

// Methods are the CRI methods of both services, streaming ones included:
// the label values of the per-method metrics.
func Methods() []string {
	var out []string
	for _, sd := range []grpc.ServiceDesc{runtimeapi.RuntimeService_ServiceDesc, runtimeapi.ImageService_ServiceDesc} {
		for _, m := range sd.Methods {
			out = append(out, m.MethodName)
		}
		for _, s := range sd.Streams {
			out = append(out, s.StreamName)
		}
	}
	return out
}

// CallRecorder counts CRI calls by method and gRPC code name
// (internal/metrics).
type CallRecorder interface {
	ObserveCall(method, code string, d time.Duration)
}

// Instrument logs and counts every CRI call: one line per call, at Info for
// calls that change something and at Debug for reads, with the objects the
// request names, the outcome and the duration. A handler that panics
// answers Internal instead of taking the daemon down.
type Instrument struct {
	Log *slog.Logger
	// Calls, when set, counts each call by method and code.
	Calls CallRecorder
}

// Unary instruments the unary methods.
func (in Instrument) Unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		method := methodName(info.FullMethod)
		start := time.Now()
		defer func() {
			if r := recover(); r != nil {
				err = in.panicked(method, r)
			}
			in.done(ctx, method, start, err, func() []slog.Attr { return requestAttrs(req, resp) })
		}()
		return handler(ctx, req)
	}
}

// Stream instruments the streaming methods (GetContainerEvents): the call
// is counted and logged when the stream ends.
func (in Instrument) Stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		method := methodName(info.FullMethod)
		start := time.Now()
		in.Log.Debug("cri stream opened", "method", method)
		defer func() {
			if r := recover(); r != nil {
				err = in.panicked(method, r)
			}
			in.done(ss.Context(), method, start, err, func() []slog.Attr { return nil })
		}()
		return handler(srv, ss)
	}
}

func methodName(full string) string { return full[strings.LastIndexByte(full, '/')+1:] }

func (in Instrument) panicked(method string, r any) error {
	in.Log.Error("panic in CRI handler", "method", method, "panic", r)
	return status.Errorf(codes.Internal, "internal error in %s", method)
}

// done counts the call and logs its line; attrs are built only when the
// line is written.
func (in Instrument) done(ctx context.Context, method string, start time.Time, err error, attrs func() []slog.Attr) {
	d := time.Since(start)
	code := status.Code(err)
	if in.Calls != nil {
		in.Calls.ObserveCall(method, code.String(), d)
	}
	level := slog.LevelInfo
	if readOnly[method] && err == nil {
		level = slog.LevelDebug
	}
	if !in.Log.Enabled(ctx, level) {
		return
	}
	a := append(attrs(), slog.String("method", method), slog.String("code", code.String()), slog.Duration("duration", d))
	if err != nil {
		a = append(a, slog.String("error", status.Convert(err).Message()))
	}
	in.Log.LogAttrs(ctx, level, "cri call", a...)
}

// requestAttrs names the objects a call is about. Only IDs and image
// names: never a request's auth or a config's values.
func requestAttrs(req, resp any) []slog.Attr {
	var attrs []slog.Attr
	if r, ok := req.(interface{ GetPodSandboxId() string }); ok && r.GetPodSandboxId() != "" {
		attrs = append(attrs, slog.String("pod_sandbox_id", r.GetPodSandboxId()))
	}
	if r, ok := resp.(interface{ GetPodSandboxId() string }); ok && r.GetPodSandboxId() != "" {
		attrs = append(attrs, slog.String("pod_sandbox_id", r.GetPodSandboxId()))
	}
	if r, ok := req.(interface{ GetContainerId() string }); ok && r.GetContainerId() != "" {
		attrs = append(attrs, slog.String("container_id", r.GetContainerId()))
	}
	if r, ok := resp.(interface{ GetContainerId() string }); ok && r.GetContainerId() != "" {
		attrs = append(attrs, slog.String("container_id", r.GetContainerId()))
	}
	if r, ok := req.(interface{ GetImage() *runtimeapi.ImageSpec }); ok && r.GetImage().GetImage() != "" {
		attrs = append(attrs, slog.String("image", r.GetImage().GetImage()))
	}
	if r, ok := resp.(*runtimeapi.PullImageResponse); ok && r.GetImageRef() != "" {
		attrs = append(attrs, slog.String("image_ref", r.GetImageRef()))
	}
	switch r := req.(type) {
	case *runtimeapi.RunPodSandboxRequest:
		md := r.GetConfig().GetMetadata()
		attrs = append(attrs, slog.String("pod_namespace", md.GetNamespace()), slog.String("pod_name", md.GetName()),
			slog.String("handler", r.GetRuntimeHandler()))
	case *runtimeapi.CreateContainerRequest:
		attrs = append(attrs, slog.String("container_name", r.GetConfig().GetMetadata().GetName()))
		if img := r.GetConfig().GetImage().GetImage(); img != "" {
			attrs = append(attrs, slog.String("image", img))
		}
	}
	return attrs
}
