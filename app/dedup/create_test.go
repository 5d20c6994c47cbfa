package dedup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mqdapr/mqdapr/app/kv"
)

// heldStore holds the first Create until release is closed and records the CreateMany calls.
type heldStore struct {
	*kv.Mem
	held    chan struct{} // closed when the first Create is held
	release chan struct{}
	once    sync.Once
	mu      sync.Mutex
	batches [][]string
}

func (h *heldStore) Create(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	first := false
	h.once.Do(func() { first = true })
	if first {
		close(h.held)
		<-h.release
	}
	return h.Mem.Create(ctx, key, value, ttl)
}

func (h *heldStore) CreateMany(ctx context.Context, items []kv.Item, ttl time.Duration) error {
	var keys []string
	for _, it := range items {
		keys = append(keys, it.Key)
	}
	slices.Sort(keys)
	h.mu.Lock()
	h.batches = append(h.batches, keys)
	h.mu.Unlock()
	var errs []error
	for _, it := range items {
		errs = append(errs, h.Mem.Create(ctx, it.Key, it.Value, ttl))
	}
	return errors.Join(errs...)
}

// TestClaimsInFlightGoTogether: claims made while one is being sent wait and go in one
// CreateMany; one of them exists already (a duplicate), which fails the batch: the key-by-key
// retry grants the others (created by the failed batch, recognised by their exact record) and
// finds the duplicate. Every claim gets its own answer; a waiter whose ctx ends gives up without
// stalling the others.
func TestClaimsInFlightGoTogether(t *testing.T) {
	ctx, clock := context.Background(), newClock()
	store := &heldStore{Mem: kv.NewMem(), held: make(chan struct{}), release: make(chan struct{})}
	dupRec := Record{State: StateDone, Owner: "r0", File: "f", At: clock.Now()}
	if err := store.Mem.Create(ctx, Key("dev-1", "dup"), dupRec.encode(), 0); err != nil {
		t.Fatal(err)
	}
	d := New(Options{Store: store, Rows: finderFunc(func(string, func([]byte) bool) (bool, error) { return false, nil }), Replica: "r1", Now: clock.Now})
	type answer struct {
		id  string
		c   *Claim
		err error
	}
	answers := make(chan answer, 10)
	claim := func(ctx context.Context, id string) {
		c, err := d.Claim(ctx, Key("dev-1", id), "f", matchID(id))
		answers <- answer{id, c, err}
	}
	go claim(ctx, "first")
	<-store.held
	ids := []string{"a", "b", "dup", "c"}
	for _, id := range ids {
		go claim(ctx, id)
	}
	gone, cancel := context.WithCancel(ctx)
	go claim(gone, "gone")
	deadline := time.Now().Add(10 * time.Second)
	for {
		d.creates.mu.Lock()
		n := len(d.creates.queue)
		d.creates.mu.Unlock()
		if n == len(ids)+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d claims queued; want %d", n, len(ids)+1)
		}
		time.Sleep(time.Millisecond) // polling for the goroutines to queue
	}
	cancel()
	if a := <-answers; a.id != "gone" || !errors.Is(a.err, context.Canceled) {
		t.Fatalf("the claim whose ctx ended: %s %v; want gone, canceled", a.id, a.err)
	}
	close(store.release)
	got := map[string]answer{}
	for range len(ids) + 1 {
		a := <-answers
		got[a.id] = a
		if a.c != nil {
			a.c.Release()
		}
	}
	for _, id := range []string{"first", "a", "b", "c"} {
		if a := got[id]; a.err != nil || a.c == nil || a.c.Duplicate {
			t.Fatalf("claim %s: %+v %v; want granted", id, a.c, a.err)
		}
		if rec := record(t, store.Mem, id); rec.Owner != "r1" || rec.State != StatePending {
			t.Fatalf("record %s %+v; want pending, r1", id, rec)
		}
	}
	if a := got["dup"]; a.err != nil || !a.c.Duplicate {
		t.Fatalf("claim dup: %+v %v; want a duplicate", a.c, a.err)
	}
	store.mu.Lock()
	batches := fmt.Sprint(store.batches)
	store.mu.Unlock()
	if batches != "[[dedup/dev-1/a dedup/dev-1/b dedup/dev-1/c dedup/dev-1/dup]]" {
		t.Fatalf("CreateMany calls %s; want the four waiting claims in one", batches)
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestFailedBatchGrantsOnlyItsOwnRecords: a redelivery of a row this replica wrote a moment ago,
// at the same clock reading and with the same open done set, goes in a batch that fails (its key
// exists): the key-by-key retry must not take the existing record for one the batch created, and
// the redelivery is a duplicate. (Before records carried their attempt number, the bytes were
// equal and the claim was granted: TestFaultsNeverDuplicateRows in app/connector wrote 2 rows.)
func TestFailedBatchGrantsOnlyItsOwnRecords(t *testing.T) {
	ctx, root, clock := context.Background(), t.TempDir(), newClock() // the clock stands still
	held := &heldStore{Mem: kv.NewMem(), held: make(chan struct{}), release: make(chan struct{})}
	r := newReplica(t, "r1", root, held, clock)
	r.d.later.window = time.Hour // one open set throughout
	defer func() {
		if err := r.d.Flush(ctx); err != nil {
			t.Error(err)
		}
	}()
	held.once.Do(func() {}) // the first Create is not held
	if err := r.writeAndCommitLater(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	held.once = sync.Once{} // hold the next Create, so that two claims queue behind it
	type answer struct {
		c   *Claim
		err error
	}
	answers := map[string]chan answer{"x": make(chan answer, 1), "k": make(chan answer, 1), "y": make(chan answer, 1)}
	file, err := r.lake.Partition(ts, "asset-1") // the file of writeAndCommitLater
	if err != nil {
		t.Fatal(err)
	}
	claim := func(id string) {
		c, err := r.d.Claim(ctx, Key("dev-1", id), file, matchID(id))
		answers[id] <- answer{c, err}
	}
	go claim("x")
	<-held.held
	go claim("k")
	go claim("y")
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.d.creates.mu.Lock()
		n := len(r.d.creates.queue)
		r.d.creates.mu.Unlock()
		if n == 2 { // waiting behind x, which is being sent
			break
		}
		if time.Now().After(deadline) {
			close(held.release)
			t.Fatalf("%d claims queued; want 2", n)
		}
		time.Sleep(time.Millisecond) // polling for the goroutines to queue
	}
	close(held.release)
	got := map[string]answer{}
	for _, id := range []string{"x", "k", "y"} {
		got[id] = <-answers[id]
		if got[id].c != nil {
			got[id].c.Release() // before any Fatal: the deferred Flush waits for every claim
		}
	}
	for id, a := range got {
		if a.err != nil {
			t.Fatalf("claim %s: %v", id, a.err)
		}
		if want := id == "k"; a.c.Duplicate != want {
			t.Fatalf("claim %s: duplicate %v; want %v", id, a.c.Duplicate, want)
		}
	}
}
