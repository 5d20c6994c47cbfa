package kvservice

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/statestore"
	"github.com/mqdapr/mqdapr/internal/hlc"
)

// gatedStore is the real LogStore with two faults a disk cannot produce on demand: the next Apply
// waits until release is closed (so that the test knows which requests share the following
// commit), and, when fail is set, returns an error instead of writing.
type gatedStore struct {
	*LogStore
	mu      sync.Mutex    // guards release, and the LogStore against a concurrent Load of the test
	release chan struct{} // nil: Apply does not wait
	fail    atomic.Bool
	applies atomic.Int64
}

func (g *gatedStore) Apply(ctx context.Context, changes []statestore.Change) error {
	g.applies.Add(1)
	g.mu.Lock()
	gate := g.release
	g.release = nil
	g.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if g.fail.Load() {
		return errors.New("injected append failure")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.LogStore.Apply(ctx, changes)
}

// records returns the live records of the log by key, safely against a concurrent Apply.
func (g *gatedStore) records(t *testing.T) map[string]statestore.Record {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	return loadAll(t, g.LogStore)
}

// hold makes the next Apply wait; the returned function lets it go on, as the end of the test does
// at the latest (so that a failing test does not hang closing the engine).
func (g *gatedStore) hold(t *testing.T) func() {
	ch := make(chan struct{})
	g.mu.Lock()
	g.release = ch
	g.mu.Unlock()
	release := sync.OnceFunc(func() { close(ch) })
	t.Cleanup(release)
	return release
}

// newGatedFixture is a broker whose key-value store persists every key in a LogStore in a fresh
// directory, behind a gatedStore.
func newGatedFixture(t *testing.T) (*fixture, *gatedStore) {
	t.Helper()
	ls, err := OpenLogStore(t.TempDir())
	require.NoError(t, err)
	gs := &gatedStore{LogStore: ls}
	f := newFixture(t, func(eo *statestore.Options, _ *broker.Options) {
		eo.Store, eo.PersistAll = gs, true
	})
	t.Cleanup(func() { require.NoError(t, ls.Close()) }) // after the engine's Close (cleanups run last first)
	return f, gs
}

// send publishes a request at QoS 1, with __ts, without failing the test (for use off the test
// goroutine) and returns the correlation data it used.
func (c *client) send(ctx context.Context, payload string) ([]byte, error) {
	corr := make([]byte, 16)
	_, _ = rand.Read(corr)
	props := &paho.PublishProperties{ResponseTopic: responseTopic(c.id), CorrelationData: corr}
	props.User.Add("__ts", ts0)
	r, err := c.Publish(ctx, &paho.Publish{Topic: statestore.RequestTopic, QoS: 1, Payload: []byte(payload), Properties: props})
	if err != nil {
		return nil, err
	}
	if r.ReasonCode != 0 {
		return nil, fmt.Errorf("PUBACK reason code 0x%x", r.ReasonCode)
	}
	return corr, nil
}

// responses collects n responses of c by correlation data.
func (c *client) responses(t *testing.T, n int) map[string]*paho.Publish {
	t.Helper()
	got := map[string]*paho.Publish{}
	for len(got) < n {
		p := c.next(t)
		got[string(p.Properties.CorrelationData)] = p
	}
	return got
}

// pollUntil fails the test unless cond becomes true within waitFor.
func pollUntil(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", waitFor, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Concurrent durable SETs, several in flight on one connection and on two connections, share
// fdatasyncs: while the first commit is held, all the others are read and applied in memory (which
// a broker serving one connection's requests one at a time behind the fdatasync cannot do), none
// is answered before its commit, and all of them are then made durable by one more commit.
func TestConcurrentSetsShareFdatasyncs(t *testing.T) {
	f, gs := newGatedFixture(t)
	clients := []*client{f.dial(t, "group-a"), f.dial(t, "group-b")}
	for _, c := range clients {
		c.subscribe(t, responseTopic(c.id))
	}
	const perClient = 16
	const n = 2 * perClient
	release := gs.hold(t)
	before := gs.Commits()
	ctx := ctxT(t)
	errs := make(chan error, n)
	for ci, c := range clients {
		for i := range perClient {
			go func() {
				_, err := c.send(ctx, respArray("SET", fmt.Sprintf("k%d-%d", ci, i), "v"))
				errs <- err
			}()
		}
	}
	pollUntil(t, func() bool { return f.engine.Len() == n }, "every SET applied in memory while the first commit is held")
	for _, c := range clients {
		select {
		case p := <-c.msgs:
			t.Fatalf("%s: answered before its change was durable: %v", c.id, p)
		default:
		}
	}
	release()
	for range n {
		require.NoError(t, <-errs)
	}
	for _, c := range clients {
		for _, p := range c.responses(t, perClient) {
			assert.Equal(t, "200", p.Properties.User.Get("__stat"))
			assert.Equal(t, "+OK\r\n", string(p.Payload))
		}
	}
	syncs := gs.Commits() - before
	t.Logf("%d SETs, %d appends (one fdatasync each), %d group commits", n, syncs, gs.applies.Load())
	assert.LessOrEqual(t, syncs, int64(2), "one commit held, then one for everything that came meanwhile")
	assert.Len(t, gs.records(t), n, "every answered SET is in the log")
}

// A failing append answers every request of the batch with __stat 500, a GET held behind it
// included, and leaves nothing of it readable: the key that existed reads its durable value again,
// the new key is absent, in the engine and in the log; the next SET then succeeds.
func TestFailedAppendFailsTheBatchAndUndoesIt(t *testing.T) {
	f, gs := newGatedFixture(t)
	a, b := f.dial(t, "fail-a"), f.dial(t, "fail-b")
	a.subscribe(t, responseTopic(a.id))
	b.subscribe(t, responseTopic(b.id))
	a.call(t, respArray("SET", "old", "v0"), "__ts", ts0)

	release := gs.hold(t)
	gs.fail.Store(true)
	ctx := ctxT(t)
	type sent struct {
		corr []byte
		err  error
	}
	first := make(chan sent, 1)
	go func() { c, err := a.send(ctx, respArray("SET", "old", "v1")); first <- sent{c, err} }()
	pollUntil(t, func() bool { return gs.applies.Load() == 2 }, "the SET of old in its commit")
	rest := make(chan sent, 2)
	go func() { c, err := b.send(ctx, respArray("SET", "new", "x")); rest <- sent{c, err} }()
	pollUntil(t, func() bool { return f.engine.Len() == 2 }, "the SET of new applied in memory")
	go func() { c, err := b.send(ctx, respArray("GET", "old")); rest <- sent{c, err} }()
	// The GET reads v1, which is not durable: it must be held with the SETs. Nothing shows that it
	// has been served without an answer, so look for its answer only after the failure.
	release()
	for _, ch := range []chan sent{first, rest, rest} {
		s := <-ch
		require.NoError(t, s.err)
	}
	for _, p := range a.responses(t, 1) {
		assert.Equal(t, "500", p.Properties.User.Get("__stat"), "the failed SET of old")
	}
	for _, p := range b.responses(t, 2) {
		if p.Properties.User.Get("__stat") == "200" {
			// The GET was served after the failure had been undone: it must read the durable value.
			assert.Equal(t, "$2\r\nv0\r\n", string(p.Payload))
			continue
		}
		assert.Equal(t, "500", p.Properties.User.Get("__stat"))
	}
	gs.fail.Store(false)
	assert.Equal(t, "$2\r\nv0\r\n", string(a.call(t, respArray("GET", "old")).Payload))
	assert.Equal(t, "$-1\r\n", string(a.call(t, respArray("GET", "new")).Payload))
	assert.Equal(t, 1, f.engine.Len())
	recs := gs.records(t)
	require.Len(t, recs, 1)
	assert.Equal(t, "v0", string(recs["old"].Value))
	a.call(t, respArray("SET", "new", "y"), "__ts", ts0)
	assert.Equal(t, "y", string(gs.records(t)["new"].Value))
}

// Apply's saves and deletes survive a reopen, after a failed Apply too (the log is rewritten from
// the live keys, which a failed Apply does not change).
func TestLogStoreApplyAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenLogStore(dir)
	require.NoError(t, err)
	v, err := hlc.Parse("001696374425000:00001:node")
	require.NoError(t, err)
	ctx := context.Background()
	save := func(k, val string) statestore.Change {
		return statestore.Change{Record: statestore.Record{Key: []byte(k), Value: []byte(val), Version: v}}
	}
	del := func(k string) statestore.Change {
		return statestore.Change{Record: statestore.Record{Key: []byte(k)}, Delete: true}
	}
	require.NoError(t, s.Apply(ctx, []statestore.Change{save("a", "0"), save("b", "1"), save("a", "2"), del("b"), save("c", "3")}))
	require.Equal(t, int64(1), s.Commits())
	require.NoError(t, s.Apply(ctx, []statestore.Change{del("c")}))
	require.NoError(t, s.Close())

	s, err = OpenLogStore(dir)
	require.NoError(t, err)
	defer s.Close()
	got := loadAll(t, s)
	require.Len(t, got, 1)
	assert.Equal(t, "2", string(got["a"].Value))
}
