package aiosdk

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/Azure/iot-operations-sdks/go/protocol"
	"github.com/Azure/iot-operations-sdks/go/protocol/hlc"
	"github.com/Azure/iot-operations-sdks/go/services/statestore"
	sserrors "github.com/Azure/iot-operations-sdks/go/services/statestore/errors"
	"github.com/stretchr/testify/require"

	sstore "github.com/mqdapr/mqdapr/broker/statestore"
)

// requireServiceError checks that err is the state store's in-band error want.
func requireServiceError(t *testing.T, err error, want sserrors.Service) {
	t.Helper()
	require.Error(t, err)
	var se statestore.ServiceError
	require.True(t, errors.As(err, &se), "want a service error %q, got %v", want, err)
	require.Equal(t, want, se)
}

func TestSetGetDelVDel(t *testing.T) {
	s := startStack(t, nil)
	c := s.client(t, "sdk-basic")
	ctx := ctxT(t)

	set, err := c.Set(ctx, "k", "v1")
	require.NoError(t, err)
	require.True(t, set.Value)
	require.False(t, set.Version.IsZero())

	got, err := c.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, "v1", got.Value)
	require.Zero(t, got.Version.Compare(set.Version), "GET returns the version SET made")

	n, err := c.VDel(ctx, "k", "other")
	require.NoError(t, err)
	require.Equal(t, -1, n.Value, "VDEL of a different value")
	n, err = c.VDel(ctx, "k", "v1")
	require.NoError(t, err)
	require.Equal(t, 1, n.Value)

	got, err = c.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, "", got.Value)
	require.True(t, got.Version.IsZero(), "a missing key has no version")

	_, err = c.Set(ctx, "k", "v2")
	require.NoError(t, err)
	n, err = c.Del(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, 1, n.Value)
	n, err = c.Del(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, 0, n.Value)

	// Binary keys and values, and an empty value, round trip.
	bin := string([]byte{0, 1, 0xFF, '\r', '\n'})
	_, err = c.Set(ctx, bin, "")
	require.NoError(t, err)
	got, err = c.Get(ctx, bin)
	require.NoError(t, err)
	require.Equal(t, "", got.Value)
	require.False(t, got.Version.IsZero(), "an empty value is stored")
}

func TestConditionsNXAndNEX(t *testing.T) {
	s := startStack(t, nil)
	c := s.client(t, "sdk-cond")
	ctx := ctxT(t)

	first, err := c.Set(ctx, "lock", "me", statestore.WithCondition(statestore.NotExists))
	require.NoError(t, err)
	require.True(t, first.Value)
	again, err := c.Set(ctx, "lock", "you", statestore.WithCondition(statestore.NotExists))
	require.NoError(t, err)
	require.False(t, again.Value, "NX on an existing key")
	require.Zero(t, again.Version.Compare(first.Version), "a failed SET answers the stored version")

	same, err := c.Set(ctx, "lock", "me", statestore.WithCondition(statestore.NotExistsOrEqual))
	require.NoError(t, err)
	require.True(t, same.Value, "NEX with the stored value")
	require.Positive(t, same.Version.Compare(first.Version))
	other, err := c.Set(ctx, "lock", "you", statestore.WithCondition(statestore.NotExistsOrEqual))
	require.NoError(t, err)
	require.False(t, other.Value, "NEX with another value")
	absent, err := c.Set(ctx, "fresh", "x", statestore.WithCondition(statestore.NotExistsOrEqual))
	require.NoError(t, err)
	require.True(t, absent.Value, "NEX on a missing key")

	got, err := c.Get(ctx, "lock")
	require.NoError(t, err)
	require.Equal(t, "me", got.Value)
}

// A key set with PX is gone once its TTL has passed, for GET and for a conditional SET.
func TestExpiryPX(t *testing.T) {
	s := startStack(t, nil)
	c := s.client(t, "sdk-px")
	ctx := ctxT(t)

	_, err := c.Set(ctx, "short", "v", statestore.WithExpiry(200*time.Millisecond))
	require.NoError(t, err)
	_, err = c.Set(ctx, "long", "v", statestore.WithExpiry(10*time.Minute))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		got, err := c.Get(ctx, "short")
		return err == nil && got.Version.IsZero()
	}, waitFor, 20*time.Millisecond)
	nx, err := c.Set(ctx, "short", "w", statestore.WithCondition(statestore.NotExists))
	require.NoError(t, err)
	require.True(t, nx.Value, "NX after expiry")
	got, err := c.Get(ctx, "long")
	require.NoError(t, err)
	require.Equal(t, "v", got.Value)
}

// KeyNotify + Notify: the SDK never subscribes to its notification topic (its receiver is not
// started by New), so these arrive only because the broker delivers each notification to the
// registering connection (issue 8 item 6): SET with the value and version, DELETE on DEL and VDEL,
// DELETE on TTL expiry with no request in between.
func TestKeyNotifySetDeleteExpiry(t *testing.T) {
	s := startStack(t, nil)
	w := s.client(t, "sdk-watcher")
	other := s.client(t, "sdk-writer")
	ctx := ctxT(t)

	ch, stop := w.Notify("watched")
	defer stop()
	require.NoError(t, w.KeyNotify(ctx, "watched"))

	set, err := other.Set(ctx, "watched", "v1")
	require.NoError(t, err)
	n := next(t, ch)
	require.Equal(t, "watched", n.Key)
	require.Equal(t, "SET", n.Operation)
	require.Equal(t, "v1", n.Value)
	require.Zero(t, n.Version.Compare(set.Version))

	_, err = other.Del(ctx, "watched")
	require.NoError(t, err)
	n = next(t, ch)
	require.Equal(t, "DELETE", n.Operation)

	_, err = other.Set(ctx, "watched", "v2")
	require.NoError(t, err)
	require.Equal(t, "v2", next(t, ch).Value)
	_, err = other.VDel(ctx, "watched", "v2")
	require.NoError(t, err)
	require.Equal(t, "DELETE", next(t, ch).Operation)

	_, err = other.Set(ctx, "watched", "v3", statestore.WithExpiry(200*time.Millisecond))
	require.NoError(t, err)
	n = next(t, ch)
	require.Equal(t, "SET", n.Operation)
	require.Equal(t, "v3", n.Value)
	n = next(t, ch) // sent by the store's expiry timer
	require.Equal(t, "DELETE", n.Operation)
	require.Equal(t, "watched", n.Key)

	// The writer's own change notifies a watcher that is also the writer.
	require.NoError(t, other.KeyNotify(ctx, "watched"))
	och, ostop := other.Notify("watched")
	defer ostop()
	_, err = other.Set(ctx, "watched", "v4")
	require.NoError(t, err)
	require.Equal(t, "v4", next(t, och).Value)
	require.Equal(t, "v4", next(t, ch).Value)

	require.NoError(t, w.KeyNotifyStop(ctx, "watched"))
	require.False(t, s.engine.Watching("sdk-watcher", []byte("watched")))
}

// Fencing tokens from a lease: a write with the current holder's token wins, one without a token
// or with an older one is refused with the store's exact error texts.
func TestFencingTokens(t *testing.T) {
	s := startStack(t, nil)
	a := s.client(t, "sdk-fence-a")
	b := s.client(t, "sdk-fence-b")
	ctx := ctxT(t)

	tokA := acquire(t, a, "fence-lock")
	res, err := a.Set(ctx, "resource", "from-a", statestore.WithFencingToken(tokA))
	require.NoError(t, err)
	require.True(t, res.Value)

	_, err = b.Set(ctx, "resource", "no-token")
	requireServiceError(t, err, sserrors.MissingFencingToken)
	_, err = b.Del(ctx, "resource")
	requireServiceError(t, err, sserrors.MissingFencingToken)

	// b takes the lock over once a's lease is gone, with a newer token.
	_, err = a.Del(ctx, "fence-lock")
	require.NoError(t, err)
	tokB := acquire(t, b, "fence-lock")
	require.Positive(t, tokB.Compare(tokA))
	res, err = b.Set(ctx, "resource", "from-b", statestore.WithFencingToken(tokB))
	require.NoError(t, err)
	require.True(t, res.Value)

	_, err = a.Set(ctx, "resource", "stale", statestore.WithFencingToken(tokA))
	requireServiceError(t, err, sserrors.FencingTokenLowerVersion)
	_, err = a.Del(ctx, "resource", statestore.WithFencingToken(tokA))
	requireServiceError(t, err, sserrors.FencingTokenLowerVersion)
	got, err := a.Get(ctx, "resource")
	require.NoError(t, err)
	require.Equal(t, "from-b", got.Value)

	n, err := b.Del(ctx, "resource", statestore.WithFencingToken(tokB))
	require.NoError(t, err)
	require.Equal(t, 1, n.Value)
}

// acquire takes name with SET NX PX as a lock and returns its version, the fencing token.
func acquire(t *testing.T, c *statestore.Client[string, string], name string) hlc.HybridLogicalClock {
	t.Helper()
	res, err := c.Set(ctxT(t), name, c.ID(), statestore.WithCondition(statestore.NotExists), statestore.WithExpiry(time.Minute))
	require.NoError(t, err)
	require.True(t, res.Value, "%s is held", name)
	return res.Version
}

// The store rejects a request timestamp or fencing token more than a minute ahead of its clock
// (docs/state-store-protocol.md#versions-hlc), and accepts one behind it.
func TestClockSkew(t *testing.T) {
	behind := startStack(t, func(o *sstore.Options) {
		o.Now = func() time.Time { return time.Now().Add(-2 * time.Minute) }
	})
	c := behind.client(t, "sdk-skew")
	_, err := c.Set(ctxT(t), "k", "v")
	requireServiceError(t, err, sserrors.TimestampSkew)
	_, err = c.Get(ctxT(t), "k")
	requireServiceError(t, err, sserrors.TimestampSkew)
	require.Zero(t, behind.engine.Len())

	// The SDK refuses responses more than its own MaxClockDrift (1 min) ahead: widen it here.
	ahead := startStack(t, func(o *sstore.Options) {
		o.Now = func() time.Time { return time.Now().Add(2 * time.Minute) }
	})
	c = ahead.client(t, "sdk-skew-ok", protocol.WithMaxClockDrift(5*time.Minute))
	res, err := c.Set(ctxT(t), "k", "v")
	require.NoError(t, err, "a request timestamp behind the store's clock is accepted")
	require.True(t, res.Value)
	require.Greater(t, res.Version.UTC(), time.Now().Add(time.Minute), "the version follows the store's clock")

	normal := startStack(t, nil)
	c = normal.client(t, "sdk-skew-ft")
	future, err := hlc.New().Parse("__ft", strconv.FormatInt(time.Now().Add(5*time.Minute).UnixMilli(), 10)+":0:future-node")
	require.NoError(t, err)
	_, err = c.Set(ctxT(t), "k", "v", statestore.WithFencingToken(future))
	requireServiceError(t, err, sserrors.FencingTokenSkew)
}
