package statekv

import (
	"bytes"
	"testing"
	"time"

	"github.com/dapr/components-contrib/state"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/broker"
)

// A write under a lease lock must never leave after the safe part of the lease (issue 8, item 5).
// Writer A reaches the broker through a fault proxy, with a 1 s lease; once A's version check has
// passed, the network fails in one of two ways before A's next write reaches the store:
//
//   - "down before send": the connection is cut before the write is sent (the old code waited for
//     the reconnection, up to requestTimeout, and sent it then);
//   - "lost after send": the write is swallowed on its way, then the connection is cut (the old
//     code's persistent session resent it after the reconnection).
//
// The proxy stays down until A's lease has expired in the store and writer B, connected directly,
// took the lock; then it comes back. Whatever A's write does afterwards, it must not land.
var lateFaults = []string{"down before send", "lost after send"}

// lateValue makes A's writes recognisable among the bytes the proxy swallows (a PINGREQ is 2 bytes).
var lateValue = bytes.Repeat([]byte("a"), 4096)

// lateWriter is writer A: a store behind p whose hook stops it after its version check.
type lateWriter struct {
	s     *Store
	p     *faultProxy
	pause *pauser
}

func newLateWriter(t *testing.T, kb *kvBroker) *lateWriter {
	t.Helper()
	w := &lateWriter{p: startFaultProxy(t, kb.b.Addrs()[0]), pause: newPauser()}
	w.s = newHookedStore(t, props(w.p.url(), "a", "lockTTL", "1s", "lockMargin", "500ms", "requestTimeout", "20s"),
		testHooks{etagRead: w.pause.hook})
	return w
}

// etagSet starts A's ETag Set of key and returns its outcome channel once A stopped after its
// version check.
func (w *lateWriter) etagSet(t *testing.T, key, etag string, fault string) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		done <- w.s.Set(t.Context(), &state.SetRequest{Key: key, Value: lateValue, ETag: &etag})
	}()
	waitChan(t, w.pause.paused, "writer A's version check")
	switch fault {
	case "down before send":
		w.p.cut()
		require.Eventually(t, func() bool { return !w.s.conn.Connected() }, waitFor, 5*time.Millisecond, "writer A sees its connection down")
		close(w.pause.resume)
	case "lost after send":
		w.p.swallowClient()
		close(w.pause.resume)
		require.Eventually(t, func() bool { return w.p.swallowedBytes() >= len(lateValue) }, waitFor, 5*time.Millisecond, "writer A's write swallowed")
		w.p.cut()
	default:
		t.Fatalf("unknown fault %q", fault)
	}
	return done
}

// notLanded checks A's outcome: an error daprd retries, never a success and never a conflict.
// A write still waiting for a connection when the safe part of the lease ended was not sent
// (ErrLeaseExpired); a write lost with its connection has an unknown outcome (ErrOutcomeUnknown).
func notLanded(t *testing.T, fault string, err error) {
	t.Helper()
	require.Error(t, err, "writer A's write succeeded although it could only land after its lease expired")
	want := map[string]error{"down before send": ErrLeaseExpired, "lost after send": ErrOutcomeUnknown}[fault]
	require.ErrorIs(t, err, want)
}

// Two ETag writers that read the same version: A is delayed past its lease, B takes the lock and
// reads the same version; the old code then let A's late SET land before B's, and both succeeded.
func TestLateETagWriteAfterLeaseExpiry(t *testing.T) {
	for _, fault := range lateFaults {
		t.Run(fault, func(t *testing.T) {
			kb := startBroker(t, true)
			setup := newStore(t, props(kb.url(), "setup"))
			bPause := newPauser()
			b := newHookedStore(t, props(kb.url(), "b", "lockTTL", "60s", "requestTimeout", "20s"), testHooks{etagRead: bPause.hook})
			a := newLateWriter(t, kb)

			set(t, setup, "k", "v0")
			e0 := get(t, setup, "k").ETag
			require.NoError(t, setup.Set(t.Context(), &state.SetRequest{Key: "k", Value: []byte("v1"), ETag: e0})) // fences the key
			e1 := *get(t, setup, "k").ETag

			aDone := a.etagSet(t, "k", e1, fault)

			bDone := make(chan error, 1)
			go func() {
				bDone <- b.Set(t.Context(), &state.SetRequest{Key: "k", Value: []byte("from-b"), ETag: &e1})
			}()
			waitChan(t, bPause.paused, "writer B's version check (A's lease expired in the store)")
			a.p.restore()
			errA := waitChan(t, aDone, "writer A's outcome")
			close(bPause.resume)
			errB := waitChan(t, bDone, "writer B's outcome")

			require.NoError(t, errB)
			notLanded(t, fault, errA)
			require.Equal(t, "from-b", string(get(t, b, "k").Data))
		})
	}
}

// A delete under a newer lock: A (ETag Set on a key never written with an ETag, so its next write
// is the NEX fence) is delayed past its lease, B deletes the key; the old code's late NEX and SET
// with A's old token then re-created the deleted key.
func TestLateWriteDoesNotRecreateDeletedKey(t *testing.T) {
	for _, fault := range lateFaults {
		t.Run(fault, func(t *testing.T) {
			kb := startBroker(t, true)
			b := newStore(t, props(kb.url(), "b", "requestTimeout", "20s"))
			a := newLateWriter(t, kb)

			require.NoError(t, b.Set(t.Context(), &state.SetRequest{Key: "k", Value: lateValue}))
			e0 := *get(t, b, "k").ETag

			aDone := a.etagSet(t, "k", e0, fault)
			require.NoError(t, b.Delete(t.Context(), &state.DeleteRequest{Key: "k"})) // waits for A's lease to expire
			a.p.restore()
			errA := waitChan(t, aDone, "writer A's outcome")

			notLanded(t, fault, errA)
			res := get(t, b, "k")
			require.Nil(t, res.ETag, "the deleted key was re-created (value %d bytes)", len(res.Data))
		})
	}
}

// The send quota: the broker allows one unacknowledged request (Receive Maximum 1), and A's GET of
// another key, sent while the link to the broker stalls (the proxy holds A's bytes), takes it. A's
// final SET then waits for quota; the stall ends only after A's lease expired in the store and B
// has read the same version. The old code's SET got the quota then, was sent, and both writers
// succeeded.
func TestLateETagWriteAfterQuotaWait(t *testing.T) {
	kb := startBrokerOpts(t, true, nil, func(o *broker.Options) { o.ReceiveMaximum = 1 })
	setup := newStore(t, props(kb.url(), "setup"))
	bPause := newPauser()
	b := newHookedStore(t, props(kb.url(), "b", "lockTTL", "60s", "requestTimeout", "20s"), testHooks{etagRead: bPause.hook})
	a := newLateWriter(t, kb)

	set(t, setup, "k", "v0")
	e0 := get(t, setup, "k").ETag
	require.NoError(t, setup.Set(t.Context(), &state.SetRequest{Key: "k", Value: []byte("v1"), ETag: e0})) // fences the key
	e1 := *get(t, setup, "k").ETag

	aDone := make(chan error, 1)
	go func() {
		aDone <- a.s.Set(t.Context(), &state.SetRequest{Key: "k", Value: lateValue, ETag: &e1})
	}()
	waitChan(t, a.pause.paused, "writer A's version check")
	a.p.holdClient()
	getDone := make(chan error, 1)
	go func() {
		_, err := a.s.Get(t.Context(), &state.GetRequest{Key: "other"})
		getDone <- err
	}()
	require.Eventually(t, func() bool { return a.p.swallowedBytes() >= 100 }, waitFor, 5*time.Millisecond, "writer A's GET held")
	close(a.pause.resume) // A's SET now waits for the quota the held GET has

	bDone := make(chan error, 1)
	go func() {
		bDone <- b.Set(t.Context(), &state.SetRequest{Key: "k", Value: []byte("from-b"), ETag: &e1})
	}()
	waitChan(t, bPause.paused, "writer B's version check (A's lease expired in the store)")
	a.p.release()
	errA := waitChan(t, aDone, "writer A's outcome")
	close(bPause.resume)
	errB := waitChan(t, bDone, "writer B's outcome")
	require.NoError(t, waitChan(t, getDone, "writer A's GET"))

	require.NoError(t, errB)
	notLanded(t, "down before send", errA) // not sent: ErrLeaseExpired
	require.Equal(t, "from-b", string(get(t, b, "k").Data))
}
