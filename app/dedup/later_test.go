package dedup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqdapr/mqdapr/app/kv"
	"github.com/mqdapr/mqdapr/app/lake"
)

// gatedStore counts the writes of done sets and the keys in the largest, and holds every one
// until open is closed.
type gatedStore struct {
	*kv.Mem
	open    chan struct{}
	calls   atomic.Int32
	maxKeys atomic.Int32
}

func (g *gatedStore) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if !strings.HasPrefix(key, "dedupset/") {
		return g.Mem.Put(ctx, key, value, ttl)
	}
	g.calls.Add(1)
	set, err := decodeSet(key, value)
	if err != nil {
		return err
	}
	for {
		m := g.maxKeys.Load()
		if int32(len(set.Keys)) <= m || g.maxKeys.CompareAndSwap(m, int32(len(set.Keys))) {
			break
		}
	}
	<-g.open
	return g.Mem.Put(ctx, key, value, ttl)
}

// done reports whether the record of id is done: marked done, or pending and listed by its set.
func done(t *testing.T, store kv.Store, id string) bool {
	t.Helper()
	rec := record(t, store, id)
	if rec.State == StateDone {
		return true
	}
	if rec.Set == "" {
		return false
	}
	v, _, found, err := store.Get(context.Background(), rec.Set)
	if err != nil || !found {
		return false
	}
	set, err := decodeSet(rec.Set, v)
	return err == nil && slices.Contains(set.Keys, Key("dev-1", id))
}

// writeAndCommitLater claims id, writes its row and queues the done mark, as the connector does.
func (r *replica) writeAndCommitLater(ctx context.Context, id string) error {
	file, err := r.lake.Partition(ts, "asset-1")
	if err != nil {
		return err
	}
	c, err := r.d.Claim(ctx, Key("dev-1", id), file, matchID(id))
	if err != nil {
		return err
	}
	defer c.Release()
	if c.Duplicate {
		return fmt.Errorf("%s: unexpected duplicate", id)
	}
	if err := r.lake.Write(file, []byte(fmt.Sprintf(`{"id":"%s","by":"%s"}`, id, r.name))); err != nil {
		return err
	}
	return c.CommitLater(ctx)
}

// TestCommitLaterReturnsBeforeTheStoreAndBatches: CommitLater returns while the store holds every
// write (the ack does not wait for it); the marks of n rows reach the store in done sets, fewer
// writes than marks, none bigger than setSize; after Flush every record is done (its set lists
// it), and records and sets carry the done TTL.
func TestCommitLaterReturnsBeforeTheStoreAndBatches(t *testing.T) {
	const n = 200
	ctx, root, clock := context.Background(), t.TempDir(), newClock()
	store := &gatedStore{Mem: kv.NewMem(), open: make(chan struct{})}
	l, err := lake.New(lake.Options{Root: root, Replica: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r := &replica{name: "r1", lake: l, d: New(Options{Store: store, Rows: l, Replica: "r1", Now: clock.Now, DoneTTL: time.Hour})}
	for i := range n {
		if err := r.writeAndCommitLater(ctx, fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	if done(t, store.Mem, "0") {
		t.Fatalf("record %+v done while the store holds the sets; want pending", record(t, store.Mem, "0"))
	}
	close(store.open)
	if err := r.d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sets := map[string]bool{}
	for i := range n {
		id := fmt.Sprint(i)
		rec := record(t, store.Mem, id)
		if !done(t, store.Mem, id) || rec.File == "" {
			t.Fatalf("record %s %+v after Flush; want done with its file", id, rec)
		}
		sets[rec.Set] = true
		if ttl := store.TTL(Key("dev-1", id)); ttl != time.Hour {
			t.Fatalf("record %s TTL %v; want 1h", id, ttl)
		}
	}
	for s := range sets {
		if ttl := store.TTL(s); ttl != time.Hour {
			t.Fatalf("set %s TTL %v; want 1h", s, ttl)
		}
	}
	if c := store.calls.Load(); c >= n || store.maxKeys.Load() > setSize || len(sets) < n/setSize {
		t.Fatalf("%d set writes (largest %d keys, %d sets) for %d marks; want fewer writes than marks, at most %d keys each", c, store.maxKeys.Load(), len(sets), n, setSize)
	}
	// Every mark is one state store write fewer: the records were only created.
	if got, want := store.Len(), n+len(sets); got != want {
		t.Fatalf("%d keys in the store; want %d records and %d sets", got, n, len(sets))
	}
}

// TestLostDoneMarkIsReconciled: the store refuses every done mark (or the process dies before it
// is written): the row is durable and acked, the record stays pending and OnDoneError is told;
// the redelivery, on this replica or (after ClaimTTL) on another one, finds the row and writes no
// second one.
func TestLostDoneMarkIsReconciled(t *testing.T) {
	for _, other := range []bool{false, true} {
		t.Run(fmt.Sprintf("redelivered to another replica %v", other), func(t *testing.T) {
			ctx, root, clock := context.Background(), t.TempDir(), newClock()
			store := kv.NewMem()
			var refuse atomic.Bool
			refuse.Store(true)
			store.Hook = func(op, key string) error {
				if op == "put" && refuse.Load() {
					return kv.ErrStore
				}
				return nil
			}
			var mu sync.Mutex
			var givenUp []string
			l, err := lake.New(lake.Options{Root: root, Replica: "r1"})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			r1 := &replica{name: "r1", lake: l, d: New(Options{Store: store, Rows: l, Replica: "r1", Now: clock.Now,
				OnDoneError: func(key string, err error) {
					mu.Lock()
					givenUp = append(givenUp, key)
					mu.Unlock()
				}})}
			if err := r1.writeAndCommitLater(ctx, "9"); err != nil {
				t.Fatal(err)
			}
			if err := r1.d.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			if len(givenUp) != 1 || givenUp[0] != Key("dev-1", "9") {
				t.Fatalf("OnDoneError got %v; want the one key", givenUp)
			}
			mu.Unlock()
			if rec := record(t, store, "9"); rec.State != StatePending {
				t.Fatalf("record %+v; want pending", rec)
			}
			refuse.Store(false)
			redo := r1
			if other {
				redo = newReplica(t, "r2", root, store, clock)
				if _, err := redo.deliver(ctx, "9", false); !errors.Is(err, ErrClaimedElsewhere) {
					t.Fatalf("redelivery on r2 within ClaimTTL: %v; want ErrClaimedElsewhere", err)
				}
				clock.Advance(21 * time.Second)
			}
			got, err := redo.deliver(ctx, "9", false)
			if err != nil || got != duplicate {
				t.Fatalf("redelivery: %v %v; want duplicate", got, err)
			}
			if n := rows(t, root, "9"); n != 1 {
				t.Fatalf("%d rows; want 1", n)
			}
			if rec := record(t, store, "9"); rec.State != StateDone {
				t.Fatalf("record %+v; want done", rec)
			}
		})
	}
}

// TestDoneSetWindow: until r1's done set is written, a redelivery to r1 is a duplicate (the set
// in memory says so, no scan) and one to r2 is ErrClaimedElsewhere (retried); once it is written,
// r2 knows the duplicate from the set alone, with a lake folder of its own (no file to scan).
func TestDoneSetWindow(t *testing.T) {
	ctx, clock := context.Background(), newClock()
	store := &gatedStore{Mem: kv.NewMem(), open: make(chan struct{})}
	l, err := lake.New(lake.Options{Root: t.TempDir(), Replica: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r1 := &replica{name: "r1", lake: l, d: New(Options{Store: store, Rows: l, Replica: "r1", Now: clock.Now})}
	r2root := t.TempDir()
	l2, err := lake.New(lake.Options{Root: r2root, Replica: "r2"})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	scans := 0
	r2 := &replica{name: "r2", lake: l2, d: New(Options{Store: store, Rows: finderFunc(func(rel string, match func([]byte) bool) (bool, error) {
		scans++
		return l2.Find(rel, match)
	}), Replica: "r2", Now: clock.Now})}
	if err := r1.writeAndCommitLater(ctx, "7"); err != nil {
		t.Fatal(err)
	}
	if got, err := r1.deliver(ctx, "7", false); err != nil || got != duplicate {
		t.Fatalf("redelivery to r1 before its set is written: %v %v; want duplicate", got, err)
	}
	if _, err := r2.deliver(ctx, "7", false); !errors.Is(err, ErrClaimedElsewhere) {
		t.Fatalf("redelivery to r2 before r1's set is written: %v; want ErrClaimedElsewhere", err)
	}
	close(store.open)
	if err := r1.d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := r2.deliver(ctx, "7", false); err != nil || got != duplicate {
		t.Fatalf("redelivery to r2 after r1's set is written: %v %v; want duplicate", got, err)
	}
	if scans != 0 || rows(t, r2root, "7") != 0 {
		t.Fatalf("r2 scanned %d files and wrote %d rows; want neither", scans, rows(t, r2root, "7"))
	}
}

type finderFunc func(rel string, match func([]byte) bool) (bool, error)

func (f finderFunc) Find(rel string, match func([]byte) bool) (bool, error) { return f(rel, match) }

// TestSetWrittenBeforeItsLastClaimEnded: a claim that does not end holds its set for setWait at
// most; the set is written with the keys committed so far, so a crash then leaves the slow
// claim's record pending and not listed: after ClaimTTL another replica takes it over and scans,
// finding the row if it was fsynced (a duplicate) and writing it if not. Both rows are there once.
func TestSetWrittenBeforeItsLastClaimEnded(t *testing.T) {
	for _, fsynced := range []bool{true, false} {
		t.Run(fmt.Sprintf("slow row fsynced %v", fsynced), func(t *testing.T) {
			ctx, root, clock := context.Background(), t.TempDir(), newClock()
			store := kv.NewMem()
			r1 := newReplica(t, "r1", root, store, clock)
			r1.d.later.window = time.Hour // both claims go to one set, which closes when Flush asks
			file, err := r1.lake.Partition(ts, "asset-1")
			if err != nil {
				t.Fatal(err)
			}
			slow, err := r1.d.Claim(ctx, Key("dev-1", "slow"), file, matchID("slow"))
			if err != nil {
				t.Fatal(err)
			}
			defer func() { // the "crashed" handler's goroutine, so that the writer ends
				slow.Release()
				if err := r1.d.Flush(ctx); err != nil {
					t.Error(err)
				}
			}()
			if err := r1.writeAndCommitLater(ctx, "fast"); err != nil {
				t.Fatal(err)
			}
			if fsynced {
				if err := r1.lake.Write(file, []byte(`{"id":"slow","by":"r1"}`)); err != nil {
					t.Fatal(err)
				}
			}
			if a, b := record(t, store, "slow").Set, record(t, store, "fast").Set; a != b || a == "" {
				t.Fatalf("sets %q and %q; want one", a, b)
			}
			fctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
			_ = r1.d.Flush(fctx) // closes the set; it cannot finish while slow's claim holds it
			cancel()
			deadline := time.Now().Add(10 * setWait)
			for !done(t, store, "fast") {
				if time.Now().After(deadline) {
					t.Fatalf("the set was not written within %v while a claim in it did not end", 10*setWait)
				}
				time.Sleep(10 * time.Millisecond) // polling the store for the background write
			}
			if done(t, store, "slow") {
				t.Fatal("the slow claim is done before it committed")
			}
			clock.Advance(21 * time.Second)
			r2 := newReplica(t, "r2", root, store, clock)
			got, err := r2.deliver(ctx, "slow", false)
			if want := map[bool]result{true: duplicate, false: written}[fsynced]; err != nil || got != want {
				t.Fatalf("redelivery to r2: %v %v; want %v", got, err, want)
			}
			for _, id := range []string{"slow", "fast"} {
				if n := rows(t, root, id); n != 1 {
					t.Fatalf("%d rows of %s; want 1", n, id)
				}
			}
		})
	}
}
