package dedup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqdapr/mqdapr/app/kv"
	"github.com/mqdapr/mqdapr/app/lake"
)

// fakeClock is a settable clock shared by the replicas of a test.
type fakeClock struct{ ns atomic.Int64 }

func newClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// replica is one app replica: its own lake writer over a shared lake folder, its own Deduper over
// the shared store.
type replica struct {
	name string
	lake *lake.Lake
	d    *Deduper
}

func newReplica(t *testing.T, name, root string, store kv.Store, clock *fakeClock) *replica {
	t.Helper()
	l, err := lake.New(lake.Options{Root: root, Replica: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return &replica{name: name, lake: l, d: New(Options{Store: store, Rows: l, Replica: name, Now: clock.Now})}
}

var ts = time.Date(2026, 11, 27, 7, 0, 0, 0, time.UTC)

func matchID(id string) func([]byte) bool {
	needle := []byte(`"id":"` + id + `"`)
	return func(line []byte) bool { return bytes.Contains(line, needle) }
}

// result of one delivery.
type result int

const (
	written result = iota
	duplicate
)

// deliver runs the connector's order: claim, check, write+fsync, commit. crashAfterWrite stops
// after the durable write, before the record is marked done.
func (r *replica) deliver(ctx context.Context, id string, crashAfterWrite bool) (result, error) {
	file, err := r.lake.Partition(ts, "asset-1")
	if err != nil {
		return 0, err
	}
	c, err := r.d.Claim(ctx, Key("dev-1", id), file, matchID(id))
	if err != nil {
		return 0, err
	}
	defer c.Release()
	if c.Duplicate {
		return duplicate, nil
	}
	if err := c.Check(); err != nil {
		return 0, err
	}
	if err := r.lake.Write(file, []byte(fmt.Sprintf(`{"id":"%s","by":"%s"}`, id, r.name))); err != nil {
		return 0, err
	}
	if crashAfterWrite {
		return written, nil
	}
	return written, c.Commit(ctx)
}

// rows counts the rows of id in every part file of the lake.
func rows(t *testing.T, root, id string) int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "date=*", "asset=*", "part-*.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		n += strings.Count(string(data), `"id":"`+id+`"`)
	}
	return n
}

func record(t *testing.T, store kv.Store, id string) Record {
	t.Helper()
	v, _, found, err := store.Get(context.Background(), Key("dev-1", id))
	if err != nil || !found {
		t.Fatalf("record %s: found %v err %v", id, found, err)
	}
	rec, err := decodeRecord(id, v)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestRedeliveryIsDuplicate(t *testing.T) {
	ctx, root, store, clock := context.Background(), t.TempDir(), kv.NewMem(), newClock()
	r := newReplica(t, "r1", root, store, clock)
	for i, want := range []result{written, duplicate, duplicate} {
		got, err := r.deliver(ctx, "1", false)
		if err != nil || got != want {
			t.Fatalf("delivery %d: %v %v; want %v", i, got, err, want)
		}
	}
	if n := rows(t, root, "1"); n != 1 {
		t.Fatalf("%d rows; want 1", n)
	}
	if rec := record(t, store, "1"); rec.State != StateDone || rec.Owner != "r1" {
		t.Fatalf("record %+v; want done by r1", rec)
	}
	if ttl := store.TTL(Key("dev-1", "1")); ttl != 0 {
		t.Fatalf("done TTL %v with DoneTTL 0; want none", ttl)
	}
}

// TestCrashBetweenFsyncAndDone: the row is durable but the record still pending; the restarted
// replica (same name) finds the row by scanning its file and completes the record.
func TestCrashBetweenFsyncAndDone(t *testing.T) {
	ctx, root, store, clock := context.Background(), t.TempDir(), kv.NewMem(), newClock()
	before := newReplica(t, "r1", root, store, clock)
	if _, err := before.deliver(ctx, "7", true); err != nil {
		t.Fatal(err)
	}
	if err := before.lake.Close(); err != nil {
		t.Fatal(err)
	}
	after := newReplica(t, "r1", root, store, clock) // restarted process
	got, err := after.deliver(ctx, "7", false)
	if err != nil || got != duplicate {
		t.Fatalf("redelivery after the crash: %v %v; want duplicate", got, err)
	}
	if n := rows(t, root, "7"); n != 1 {
		t.Fatalf("%d rows; want 1", n)
	}
	if rec := record(t, store, "7"); rec.State != StateDone {
		t.Fatalf("record %+v; want done", rec)
	}
}

// TestCrashBeforeWrite: claimed, never written; the redelivery writes the row.
func TestCrashBeforeWrite(t *testing.T) {
	ctx, root, store, clock := context.Background(), t.TempDir(), kv.NewMem(), newClock()
	r := newReplica(t, "r1", root, store, clock)
	file, _ := r.lake.Partition(ts, "asset-1")
	c, err := r.d.Claim(ctx, Key("dev-1", "3"), file, matchID("3"))
	if err != nil {
		t.Fatal(err)
	}
	c.Release() // crash: no write, no commit
	got, err := newReplica(t, "r1", root, store, clock).deliver(ctx, "3", false)
	if err != nil || got != written {
		t.Fatalf("%v %v; want written", got, err)
	}
	if n := rows(t, root, "3"); n != 1 {
		t.Fatalf("%d rows; want 1", n)
	}
}

func TestForeignClaimRespectedThenTakenOver(t *testing.T) {
	for _, ownerWrote := range []bool{false, true} {
		t.Run(fmt.Sprintf("ownerWrote=%v", ownerWrote), func(t *testing.T) {
			ctx, root, store, clock := context.Background(), t.TempDir(), kv.NewMem(), newClock()
			a := newReplica(t, "a", root, store, clock)
			b := newReplica(t, "b", root, store, clock)
			if ownerWrote {
				if _, err := a.deliver(ctx, "9", true); err != nil { // a crashes after fsync
					t.Fatal(err)
				}
			} else {
				file, _ := a.lake.Partition(ts, "asset-1")
				c, err := a.d.Claim(ctx, Key("dev-1", "9"), file, matchID("9"))
				if err != nil {
					t.Fatal(err)
				}
				c.Release() // a crashes before writing
			}
			if _, err := b.deliver(ctx, "9", false); !errors.Is(err, ErrClaimedElsewhere) {
				t.Fatalf("fresh foreign claim: err = %v; want ErrClaimedElsewhere", err)
			}
			clock.Advance(b.d.opts.ClaimTTL)
			got, err := b.deliver(ctx, "9", false)
			want := written
			if ownerWrote {
				want = duplicate
			}
			if err != nil || got != want {
				t.Fatalf("stale foreign claim: %v %v; want %v", got, err, want)
			}
			if n := rows(t, root, "9"); n != 1 {
				t.Fatalf("%d rows; want 1", n)
			}
		})
	}
}

func TestCheckRefusesAnOldClaim(t *testing.T) {
	ctx, clock := context.Background(), newClock()
	r := newReplica(t, "r1", t.TempDir(), kv.NewMem(), clock)
	c, err := r.d.Claim(ctx, Key("dev-1", "1"), "date=2026-11-27/asset=a/part-r1.jsonl", matchID("1"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release()
	if err := c.Check(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(r.d.opts.ClaimTTL / 2)
	if err := c.Check(); !errors.Is(err, ErrLeaseExpired) {
		t.Fatalf("err = %v; want ErrLeaseExpired", err)
	}
}

func TestStoreFailureIsReturned(t *testing.T) {
	store := kv.NewMem()
	boom := fmt.Errorf("%w: broker away", kv.ErrStore)
	store.Hook = func(op, key string) error {
		if op == "put" {
			return boom
		}
		return nil
	}
	r := newReplica(t, "r1", t.TempDir(), store, newClock())
	if _, err := r.deliver(context.Background(), "1", false); !errors.Is(err, kv.ErrStore) {
		t.Fatalf("err = %v; want kv.ErrStore", err)
	}
	store.Hook = nil
	if got, err := r.deliver(context.Background(), "1", false); err != nil || got != duplicate {
		t.Fatalf("redelivery after a failed commit: %v %v; want duplicate (reconciled)", got, err)
	}
}

func TestBadRecord(t *testing.T) {
	store := kv.NewMem()
	if err := store.Put(context.Background(), Key("dev-1", "1"), []byte(`{"state":"weird"}`), 0); err != nil {
		t.Fatal(err)
	}
	r := newReplica(t, "r1", t.TempDir(), store, newClock())
	if _, err := r.deliver(context.Background(), "1", false); !errors.Is(err, ErrBadRecord) {
		t.Fatalf("err = %v; want ErrBadRecord", err)
	}
}

// TestRacingDeliveriesWriteOnce delivers every message to two replicas and twice within each,
// all at once, retrying retriable errors as the pub/sub component would: one row per message.
func TestRacingDeliveriesWriteOnce(t *testing.T) {
	const n = 40
	ctx, root, store, clock := context.Background(), t.TempDir(), kv.NewMem(), newClock()
	reps := []*replica{newReplica(t, "a", root, store, clock), newReplica(t, "b", root, store, clock)}
	var wrote atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, 4*n)
	for i := range n {
		id := fmt.Sprint(i)
		for _, r := range []*replica{reps[0], reps[1], reps[0], reps[1]} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					got, err := r.deliver(ctx, id, false)
					if errors.Is(err, ErrClaimedElsewhere) {
						runtime.Gosched() // redelivered until the owner commits
						continue
					}
					if err != nil {
						errs <- err
						return
					}
					if got == written {
						wrote.Add(1)
					}
					return
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := wrote.Load(); got != n {
		t.Fatalf("%d writes for %d messages; want %d", got, n, n)
	}
	for i := range n {
		if c := rows(t, root, fmt.Sprint(i)); c != 1 {
			t.Fatalf("message %d: %d rows; want 1", i, c)
		}
	}
}

func TestDoneTTLIsApplied(t *testing.T) {
	store, clock := kv.NewMem(), newClock()
	root := t.TempDir()
	l, err := lake.New(lake.Options{Root: root, Replica: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r := &replica{name: "r1", lake: l, d: New(Options{Store: store, Rows: l, Replica: "r1", Now: clock.Now, DoneTTL: time.Hour})}
	if _, err := r.deliver(context.Background(), "1", false); err != nil {
		t.Fatal(err)
	}
	if ttl := store.TTL(Key("dev-1", "1")); ttl != time.Hour {
		t.Fatalf("TTL %v; want 1h", ttl)
	}
}
