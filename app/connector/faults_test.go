package connector

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"

	"github.com/mqdapr/mqdapr/app/kv"
)

// lockedRand is a deterministic random source shared by goroutines.
type lockedRand struct {
	mu sync.Mutex
	r  *rand.Rand
}

func (l *lockedRand) chance(p float64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Float64() < p
}

// TestFaultsNeverDuplicateRows delivers every message twice, concurrently, to two replicas that
// share the store and the lake folder, while state store calls (10%) and fsyncs (5%) fail at
// random; every failed delivery is redelivered, alternating replicas, until it is acked. Every
// message must end up as exactly one row.
func TestFaultsNeverDuplicateRows(t *testing.T) {
	const n = 60
	rng := &lockedRand{r: rand.New(rand.NewPCG(1, 2))}
	store, root := kv.NewMem(), t.TempDir()
	store.Hook = func(op, key string) error {
		if rng.chance(0.10) {
			return fmt.Errorf("%w: injected failure of %s %s", kv.ErrStore, op, key)
		}
		return nil
	}
	syncHook := func(f *os.File) error {
		if rng.chance(0.05) {
			return errors.New("injected EIO")
		}
		return f.Sync()
	}
	reps := []*fixture{newFixture(t, "a", store, root, syncHook), newFixture(t, "b", store, root, syncHook)}
	ctx := context.Background()

	var wg sync.WaitGroup
	for i := range n {
		m := Message{Topic: "devices/dev-1/telemetry", Data: reading(fmt.Sprint(i), "2026-11-27T07:00:00Z", "50")}
		for first := range 2 {
			wg.Go(func() {
				for attempt := first; ; attempt++ {
					if err := reps[attempt%2].c.Handle(ctx, m); err == nil {
						return
					}
					if attempt > 10000 {
						t.Errorf("message %d never acked", i)
						return
					}
				}
			})
		}
	}
	wg.Wait()

	seen := map[string]int{}
	for _, r := range reps[0].rows(t) {
		seen[r.ID]++
	}
	for i := range n {
		if c := seen[fmt.Sprintf("dev-1/%d", i)]; c != 1 {
			t.Errorf("message %d: %d rows; want 1", i, c)
		}
	}
	written := reps[0].c.Counters().Written.Load() + reps[1].c.Counters().Written.Load()
	if len(seen) != n || written > n {
		t.Fatalf("%d distinct rows, %d counted written; want %d", len(seen), written, n)
	}
	failed := reps[0].c.Counters().Failed.Load() + reps[1].c.Counters().Failed.Load()
	dups := reps[0].c.Counters().Duplicates.Load() + reps[1].c.Counters().Duplicates.Load()
	if failed == 0 || dups < n {
		t.Fatalf("%d failed deliveries, %d duplicates: the faults were not exercised", failed, dups)
	}
	t.Logf("%d failed deliveries redelivered, %d duplicates skipped, %d rows", failed, dups, len(seen))
}
