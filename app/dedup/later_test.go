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
