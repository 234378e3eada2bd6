// Package cri holds huskd's gRPC handlers for the CRI v1 RuntimeService and
// ImageService. Handlers are thin: they validate nothing the domain packages
// validate, log one line per mutating call, and convert domain errors to gRPC
// status codes in exactly one place, toStatus.
package cri

import (
	"context"
	"errors"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// toStatus maps a domain error to a gRPC status. Domain packages classify
// their errors with errdefs (wrapped with %w); anything unclassified is
// Unknown. The message keeps the whole wrapped chain, so the client sees which
// object and which step failed.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var code codes.Code
	switch {
	case errdefs.IsInvalidArgument(err):
		code = codes.InvalidArgument
	case errdefs.IsNotFound(err):
		code = codes.NotFound
	case errdefs.IsAlreadyExists(err):
		code = codes.AlreadyExists
	case errdefs.IsFailedPrecondition(err), errdefs.IsConflict(err):
		code = codes.FailedPrecondition
	case errdefs.IsUnavailable(err):
		code = codes.Unavailable
	case errdefs.IsNotImplemented(err):
		code = codes.Unimplemented
	case errdefs.IsPermissionDenied(err):
		code = codes.PermissionDenied
	case errdefs.IsResourceExhausted(err):
		code = codes.ResourceExhausted
	case errdefs.IsOutOfRange(err):
		code = codes.OutOfRange
	case errdefs.IsUnauthorized(err):
		code = codes.Unauthenticated
	case errdefs.IsInternal(err):
		code = codes.Internal
	case errors.Is(err, context.DeadlineExceeded), errdefs.IsDeadlineExceeded(err):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled), errdefs.IsCanceled(err):
		code = codes.Canceled
	default:
		code = codes.Unknown
	}
	return status.Error(code, err.Error())
}
