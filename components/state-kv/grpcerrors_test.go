package statekv

import (
	"errors"
	"fmt"
	"testing"

	"github.com/dapr/components-contrib/state"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestToGRPC(t *testing.T) {
	require.NoError(t, toGRPC(nil))
	plain := fmt.Errorf("x: %w", ErrNoResponse)
	require.Equal(t, plain, toGRPC(plain))
	for kind, code := range map[state.ETagErrorKind]codes.Code{
		state.ETagMismatch: codes.FailedPrecondition,
		state.ETagInvalid:  codes.InvalidArgument,
	} {
		err := errors.Join(state.NewBulkStoreError("k", state.NewETagError(kind, errors.New("why"))))
		st, ok := status.FromError(toGRPC(err))
		require.True(t, ok)
		require.Equal(t, code, st.Code())
		require.Len(t, st.Details(), 1)
		br := st.Details()[0].(*errdetails.BadRequest)
		require.Equal(t, "etag", br.FieldViolations[0].Field)
	}
}

// Through Pluggable, an ETag mismatch of a real request leaves as FailedPrecondition.
func TestPluggableETagMismatch(t *testing.T) {
	kb := startBroker(t, true)
	p := NewPluggable(testLog)
	require.NoError(t, p.Init(t.Context(), state.Metadata{Base: metadataBase(props(kb.url(), "r1"))}))
	t.Cleanup(func() { _ = p.Close() })
	require.NoError(t, p.Set(t.Context(), &state.SetRequest{Key: "k", Value: []byte("v")}))
	stale := "001000000000000:00000:x"
	st, ok := status.FromError(p.Set(t.Context(), &state.SetRequest{Key: "k", Value: []byte("w"), ETag: &stale}))
	require.True(t, ok)
	require.Equal(t, codes.FailedPrecondition, st.Code())
}
