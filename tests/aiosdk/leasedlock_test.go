package aiosdk

import (
	"testing"
	"time"

	"github.com/Azure/iot-operations-sdks/go/services/leasedlock"
	"github.com/stretchr/testify/require"
)

// leasedlock over the store: one holder at a time, Holder names it, Release frees the lease for
// the next client, whose token is newer; an observer is told of each change through KEYNOTIFY.
func TestLeasedLockAcquireHolderRelease(t *testing.T) {
	s := startStack(t, nil)
	a := s.client(t, "sdk-lease-a")
	b := s.client(t, "sdk-lease-b")
	ctx := ctxT(t)
	la := leasedlock.NewLease(a, "lease")
	lb := leasedlock.NewLease(b, "lease")

	holder, held, err := lb.Holder(ctx)
	require.NoError(t, err)
	require.False(t, held)
	require.Empty(t, holder)

	changes, stop := lb.Observe()
	defer stop()
	require.NoError(t, lb.ObserveStart(ctx))

	ok, err := la.Acquire(ctx, time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	tokA, err := la.Token(ctx)
	require.NoError(t, err)
	require.Equal(t, leasedlock.Change{Held: true, Holder: "sdk-lease-a"}, nextChange(t, changes))

	holder, held, err = lb.Holder(ctx)
	require.NoError(t, err)
	require.True(t, held)
	require.Equal(t, "sdk-lease-a", holder)

	ok, err = lb.Acquire(ctx, time.Minute)
	require.NoError(t, err)
	require.False(t, ok, "the lease is held by a")
	_, err = lb.Token(ctx)
	require.ErrorIs(t, err, leasedlock.ErrNoLease)

	// Renewal by the holder (SET NEX with its own value) keeps the lease and moves the token on.
	ok, err = la.Acquire(ctx, time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	renewed, err := la.Token(ctx)
	require.NoError(t, err)
	require.Positive(t, renewed.Compare(tokA))
	require.Equal(t, leasedlock.Change{Held: true, Holder: "sdk-lease-a"}, nextChange(t, changes))

	require.NoError(t, la.Release(ctx))
	require.Equal(t, leasedlock.Change{Held: false}, nextChange(t, changes))
	_, held, err = lb.Holder(ctx)
	require.NoError(t, err)
	require.False(t, held)

	ok, err = lb.Acquire(ctx, time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	tokB, err := lb.Token(ctx)
	require.NoError(t, err)
	require.Positive(t, tokB.Compare(renewed))
	require.Equal(t, leasedlock.Change{Held: true, Holder: "sdk-lease-b"}, nextChange(t, changes))
	require.NoError(t, lb.Release(ctx))
	require.Equal(t, leasedlock.Change{Held: false}, nextChange(t, changes))
	require.NoError(t, lb.ObserveStop(ctx))
}

// A lease acquired with a short duration expires on its own: the observer sees the DELETE of the
// expiry and another client can then acquire it.
func TestLeasedLockExpires(t *testing.T) {
	s := startStack(t, nil)
	a := s.client(t, "sdk-lease-x")
	b := s.client(t, "sdk-lease-y")
	ctx := ctxT(t)
	la := leasedlock.NewLease(a, "short-lease")
	lb := leasedlock.NewLease(b, "short-lease")
	changes, stop := lb.Observe()
	defer stop()
	require.NoError(t, lb.ObserveStart(ctx))

	ok, err := la.Acquire(ctx, 300*time.Millisecond)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, leasedlock.Change{Held: true, Holder: "sdk-lease-x"}, nextChange(t, changes))
	require.Equal(t, leasedlock.Change{Held: false}, nextChange(t, changes)) // the store's expiry timer
	ok, err = lb.Acquire(ctx, time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
}

func nextChange(t *testing.T, ch <-chan leasedlock.Change) leasedlock.Change {
	t.Helper()
	select {
	case c, ok := <-ch:
		require.True(t, ok, "change channel closed")
		return c
	case <-time.After(waitFor):
		t.Fatalf("no lease change within %s", waitFor)
		return leasedlock.Change{}
	}
}
