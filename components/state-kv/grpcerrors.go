package statekv

import (
	"context"
	"errors"
	"time"

	"github.com/dapr/components-contrib/state"
	"github.com/dapr/kit/logger"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Pluggable is the Store as served over the pluggable-component socket. The components-go-sdk
// passes errors to gRPC unchanged, and daprd recognises an ETag error only as status
// FailedPrecondition (mismatch) or InvalidArgument (invalid ETag) carrying a BadRequest field
// violation on "etag"; anything else reaches the app as HTTP 500 instead of 409/400. Pluggable
// converts ETag errors to those statuses; in process, use Store, whose errors are contrib's.
type Pluggable struct {
	*Store
}

// NewPluggable returns an uninitialised Pluggable. It does no I/O.
func NewPluggable(log logger.Logger) *Pluggable { return &Pluggable{Store: New(log)} }

// Set is Store.Set with ETag errors as gRPC statuses.
func (p *Pluggable) Set(ctx context.Context, req *state.SetRequest) error {
	t0 := time.Now() // metrics.go
	return toGRPC(p.m.done(opSet, t0, p.Store.Set(ctx, req)))
}

// Delete is Store.Delete with ETag errors as gRPC statuses.
func (p *Pluggable) Delete(ctx context.Context, req *state.DeleteRequest) error {
	t0 := time.Now() // metrics.go
	return toGRPC(p.m.done(opDelete, t0, p.Store.Delete(ctx, req)))
}

// BulkSet is Store.BulkSet; if any key failed on its ETag the call fails with that key's status
// (a per-key error cannot cross the protocol).
func (p *Pluggable) BulkSet(ctx context.Context, reqs []state.SetRequest, opts state.BulkStoreOpts) error {
	t0 := time.Now() // metrics.go
	return toGRPC(p.m.done(opBulkSet, t0, p.Store.BulkSet(ctx, reqs, opts)))
}

// BulkDelete is Store.BulkDelete with the conversion of BulkSet.
func (p *Pluggable) BulkDelete(ctx context.Context, reqs []state.DeleteRequest, opts state.BulkStoreOpts) error {
	t0 := time.Now() // metrics.go
	return toGRPC(p.m.done(opBulkDelete, t0, p.Store.BulkDelete(ctx, reqs, opts)))
}

// toGRPC converts an error holding a *state.ETagError into the status daprd maps back to it.
func toGRPC(err error) error {
	var etagErr *state.ETagError
	if err == nil || !errors.As(err, &etagErr) {
		return err
	}
	code := codes.FailedPrecondition
	if etagErr.Kind() == state.ETagInvalid {
		code = codes.InvalidArgument
	}
	st, derr := status.New(code, err.Error()).WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "etag", Description: err.Error()}},
	})
	if derr != nil {
		return status.Error(code, err.Error())
	}
	return st.Err()
}
