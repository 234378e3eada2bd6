package cri

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestToStatus(t *testing.T) {
	tests := []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("sandbox x: %w", errdefs.ErrNotFound), codes.NotFound},
		{fmt.Errorf("metadata.name: %w", errdefs.ErrInvalidArgument), codes.InvalidArgument},
		{fmt.Errorf("name y: %w", errdefs.ErrAlreadyExists), codes.AlreadyExists},
		{fmt.Errorf("run: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{fmt.Errorf("run: %w", context.Canceled), codes.Canceled},
		{fmt.Errorf("pull: panic: %w", errdefs.ErrInternal), codes.Internal},
		{errors.New("boom"), codes.Unknown},
		{status.Error(codes.Aborted, "as is"), codes.Aborted},
	}
	for _, tt := range tests {
		got := status.Code(toStatus(tt.err))
		if got != tt.want {
			t.Errorf("toStatus(%q) = %s, want %s", tt.err, got, tt.want)
		}
	}
	if toStatus(nil) != nil {
		t.Error("toStatus(nil) != nil")
	}
}
