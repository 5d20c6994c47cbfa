package statestore

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// batchStore is a MemoryStore with Apply, whose next Apply can be held until released and made to
// fail: the two faults of a group commit a real disk cannot produce on demand.
type batchStore struct {
	*MemoryStore
	mu      sync.Mutex
	gate    chan struct{}
	fail    atomic.Bool
	applies atomic.Int64
}

func (b *batchStore) Apply(ctx context.Context, changes []Change) error {
	b.applies.Add(1)
	b.mu.Lock()
	gate := b.gate
	b.gate = nil
	b.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if b.fail.Load() {
		return errDisk
	}
	for _, c := range changes {
		var err error
		if c.Delete {
			err = b.MemoryStore.Delete(ctx, c.Record.Key)
		} else {
			err = b.MemoryStore.Save(ctx, c.Record)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// hold makes the next Apply wait until the returned function (or the end of the test) is called.
func (b *batchStore) hold(t *testing.T) func() {
	ch := make(chan struct{})
	b.mu.Lock()
	b.gate = ch
	b.mu.Unlock()
	release := sync.OnceFunc(func() { close(ch) })
	t.Cleanup(release)
	return release
}

// submit sends a request through Submit and returns where its answer arrives.
func (h *harness) submit(payload string, props ...string) <-chan Result {
	h.t.Helper()
	ch := make(chan Result, 1)
	if err := h.e.Submit(context.Background(), req("app1", payload, props...), func(r Result) { ch <- r }); err != nil {
		h.t.Fatalf("Submit(%q): %v", payload, err)
	}
	return ch
}

func statusOf(r Result) string {
	s, _ := r.Response.Properties.Get(PropStatus)
	return s
}

// A failed group commit answers 500 to every request held behind it (the SET in the commit, a
// DEL and a memory-only SET made meanwhile, a GET that read the uncommitted value) and undoes all
// their changes in memory, newest first: values, versions and TTL deadlines read as before, and the
// store holds only what was durable. Nothing is answered before its commit.
func TestGroupCommitFailureUndoesEverythingHeld(t *testing.T) {
	store := &batchStore{MemoryStore: NewMemoryStore()}
	h := newHarness(t, withStore(store, false))
	checkPayload(t, h.do(array("SET", "ttl", "v0", "PX", "60000"), h.nowTS(), persist), "+OK\r\n")
	checkPayload(t, h.do(array("SET", "gone", "g"), h.nowTS(), persist), "+OK\r\n")
	h.set("vol", "m0")
	before := store.Records()
	deadline, _ := h.e.NextDeadline()
	getTTL := h.do(array("GET", "ttl"))

	release := store.hold(t)
	store.fail.Store(true)
	applies := store.applies.Load()
	first := h.submit(array("SET", "ttl", "v1"), h.nowTS(), persist)
	for end := time.Now().Add(10 * time.Second); store.applies.Load() == applies; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the SET of ttl never reached Apply")
		}
	}
	held := []<-chan Result{
		first,
		h.submit(array("DEL", "gone")),
		h.submit(array("SET", "vol", "m1"), h.nowTS()),
		h.submit(array("GET", "ttl")),
	}
	for i, ch := range held {
		select {
		case r := <-ch:
			t.Fatalf("request %d answered before its commit: %+v", i, r.Response)
		default:
		}
	}
	release()
	for i, ch := range held {
		if r := <-ch; statusOf(r) != "500" || len(r.Notifications) != 0 {
			t.Errorf("request %d: __stat %q, %d notifications; want 500 and none", i, statusOf(r), len(r.Notifications))
		}
	}
	checkResponse(t, h.do(array("GET", "ttl")), "$2\r\nv0\r\n", mustGet(t, getTTL, PropTimestamp))
	checkPayload(t, h.do(array("GET", "gone")), "$1\r\ng\r\n")
	checkPayload(t, h.do(array("GET", "vol")), "$2\r\nm0\r\n")
	if d, ok := h.e.NextDeadline(); !ok || !d.Equal(deadline) {
		t.Errorf("NextDeadline = %v %v, want the TTL of ttl restored: %v", d, ok, deadline)
	}
	if got := store.Records(); len(got) != len(before) {
		t.Errorf("store records %+v, want %+v", got, before)
	}
	store.fail.Store(false)
	checkPayload(t, h.do(array("SET", "ttl", "v2"), h.nowTS(), persist), "+OK\r\n")
	checkPayload(t, h.do(array("GET", "ttl")), "$2\r\nv2\r\n")
}

func mustGet(t *testing.T, r Result, prop string) string {
	t.Helper()
	v, ok := r.Response.Properties.Get(prop)
	if !ok {
		t.Fatalf("no %s in %+v", prop, r.Response)
	}
	return v
}
