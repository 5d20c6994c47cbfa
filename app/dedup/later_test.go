package dedup

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqdapr/mqdapr/app/kv"
	"github.com/mqdapr/mqdapr/app/lake"
)

// gatedStore counts PutMany calls and the items in the largest, and holds every PutMany until
// open is closed.
type gatedStore struct {
	*kv.Mem
	open     chan struct{}
	calls    atomic.Int32
	maxItems atomic.Int32
}

func (g *gatedStore) PutMany(ctx context.Context, items []kv.Item, ttl time.Duration) error {
	g.calls.Add(1)
	for {
		m := g.maxItems.Load()
		if int32(len(items)) <= m || g.maxItems.CompareAndSwap(m, int32(len(items))) {
			break
		}
	}
	<-g.open
	return g.Mem.PutMany(ctx, items, ttl)
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
// write (the ack does not wait for it); the marks of n rows reach the store in fewer calls than
// marks, none bigger than doneBatch; after Flush every record is done with the done TTL.
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
	if rec := record(t, store.Mem, "0"); rec.State != StatePending {
		t.Fatalf("record %+v while the store holds the marks; want pending", rec)
	}
	close(store.open)
	if err := r.d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		id := fmt.Sprint(i)
		if rec := record(t, store.Mem, id); rec.State != StateDone || rec.File == "" {
			t.Fatalf("record %s %+v after Flush; want done with its file", id, rec)
		}
		if ttl := store.TTL(Key("dev-1", id)); ttl != time.Hour {
			t.Fatalf("record %s TTL %v; want 1h", id, ttl)
		}
	}
	if c := store.calls.Load(); c >= n || store.maxItems.Load() > doneBatch {
		t.Fatalf("%d store calls (largest %d marks) for %d marks; want fewer calls than marks, at most %d marks each", c, store.maxItems.Load(), n, doneBatch)
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
