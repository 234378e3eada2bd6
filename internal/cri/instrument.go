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
	"ListPodSandboxMetrics": true,
}

// UnaryInterceptor logs one line per call, at Info for calls that change
// something and at Debug for reads, with the objects the request names,
// the outcome and the duration. A handler that panics answers Internal
// instead of taking the daemon down.
func UnaryInterceptor(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		method := info.FullMethod[strings.LastIndexByte(info.FullMethod, '/')+1:]
		start := time.Now()
		defer func() {
			if r := recover(); r != nil {
				log.Error("panic in CRI handler", "method", method, "panic", r)
				err = status.Errorf(codes.Internal, "internal error in %s", method)
			}
			level := slog.LevelInfo
			if readOnly[method] {
				level = slog.LevelDebug
			}
			if err != nil && level == slog.LevelDebug {
				level = slog.LevelInfo
			}
			if !log.Enabled(ctx, level) {
				return
			}
			attrs := append(requestAttrs(req, resp), slog.String("method", method), slog.Duration("duration", time.Since(start)))
			if err != nil {
				attrs = append(attrs, slog.String("code", status.Code(err).String()), slog.String("error", status.Convert(err).Message()))
			}
			log.LogAttrs(ctx, level, "cri call", attrs...)
		}()
		return handler(ctx, req)
	}
}

// requestAttrs names the objects a call is about.
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
	if r, ok := req.(*runtimeapi.RunPodSandboxRequest); ok {
		md := r.GetConfig().GetMetadata()
		attrs = append(attrs, slog.String("pod_namespace", md.GetNamespace()), slog.String("pod_name", md.GetName()),
			slog.String("handler", r.GetRuntimeHandler()))
	}
	return attrs
}
