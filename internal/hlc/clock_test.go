package hlc

import (
	"errors"
	"math"
	"sync"
	"testing"
	"time"
)

// fakeWall is an injectable wall clock; tests move it explicitly.
type fakeWall struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func (f *fakeWall) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeWall) Set(ms int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.t = time.UnixMilli(ms)
}

const t0 = 1696374425000

func newTestClock(t *testing.T, ms int64) (*Clock, *fakeWall) {
	t.Helper()
	w := &fakeWall{}
	w.Set(ms)
	c, err := NewClock(Options{NodeID: "store", Now: w.Now})
	if err != nil {
		t.Fatal(err)
	}
	return c, w
}

func TestNewClockValidation(t *testing.T) {
	if _, err := NewClock(Options{NodeID: "a:b"}); !errors.Is(err, ErrMalformed) {
		t.Errorf("node ID with ':' = %v, want ErrMalformed", err)
	}
	if _, err := NewClock(Options{MaxSkew: -time.Second}); err == nil {
		t.Error("negative MaxSkew accepted")
	}
	c, err := NewClock(Options{NodeID: "n"})
	if err != nil || c.NodeID() != "n" || c.maxSkew != DefaultMaxSkew {
		t.Errorf("defaults: %v %+v", err, c)
	}
}

func TestNowSequence(t *testing.T) {
	c, w := newTestClock(t, t0)
	steps := []struct {
		name   string
		wallMs int64
		want   HLC
	}{
		{"first reading takes the wall clock", t0, HLC{t0, 0, "store"}},
		{"same millisecond increments counter", t0, HLC{t0, 1, "store"}},
		{"wall moves forward resets counter", t0 + 5, HLC{t0 + 5, 0, "store"}},
		{"wall steps back: never backwards", t0 - 1000, HLC{t0 + 5, 1, "store"}},
		{"still behind", t0 + 4, HLC{t0 + 5, 2, "store"}},
		{"wall catches up", t0 + 6, HLC{t0 + 6, 0, "store"}},
		{"before epoch reads as 0", -5, HLC{t0 + 6, 1, "store"}},
	}
	for _, s := range steps {
		w.Set(s.wallMs)
		if got := c.Now(); got != s.want {
			t.Errorf("%s: Now() = %v, want %v", s.name, got, s.want)
		}
	}
}

func TestCheckSkew(t *testing.T) {
	c, _ := newTestClock(t, t0)
	tests := []struct {
		name   string
		remote HLC
		ok     bool
	}{
		{"older accepted", HLC{t0 - 3600_000, 0, "c"}, true},
		{"equal accepted", HLC{t0, 99, "c"}, true},
		{"exactly one minute ahead accepted", HLC{t0 + 60_000, 99, "c"}, true},
		{"more than one minute ahead rejected", HLC{t0 + 60_001, 0, "c"}, false},
		{"far future rejected", HLC{math.MaxUint64, 0, "c"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := c.CheckSkew(tc.remote)
			if tc.ok && err != nil {
				t.Errorf("CheckSkew(%v) = %v, want nil", tc.remote, err)
			}
			if !tc.ok && !errors.Is(err, ErrClockSkew) {
				t.Errorf("CheckSkew(%v) = %v, want ErrClockSkew", tc.remote, err)
			}
		})
	}
}

func TestCheckSkewCustom(t *testing.T) {
	w := &fakeWall{}
	w.Set(t0)
	c, err := NewClock(Options{NodeID: "s", Now: w.Now, MaxSkew: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckSkew(HLC{WallMs: t0 + 1000}); err != nil {
		t.Errorf("1s ahead with MaxSkew 1s: %v", err)
	}
	if err := c.CheckSkew(HLC{WallMs: t0 + 1001}); !errors.Is(err, ErrClockSkew) {
		t.Errorf("1.001s ahead with MaxSkew 1s: %v", err)
	}
}

func TestUpdate(t *testing.T) {
	tests := []struct {
		name   string
		last   HLC // observed before the update; zero for none
		wallMs int64
		remote HLC
		want   HLC
	}{
		{"remote older: wall clock wins", HLC{}, t0, HLC{t0 - 10, 7, "c"}, HLC{t0, 0, "store"}},
		{"remote equal wall: counter+1", HLC{}, t0, HLC{t0, 7, "c"}, HLC{t0, 8, "store"}},
		{"remote ahead within skew: remote wall, counter+1", HLC{}, t0, HLC{t0 + 30_000, 3, "c"}, HLC{t0 + 30_000, 4, "store"}},
		{"last ahead of both", HLC{t0 + 50, 2, "store"}, t0, HLC{t0 + 10, 9, "c"}, HLC{t0 + 50, 3, "store"}},
		{"last and remote tie: max counter+1", HLC{t0 + 50, 2, "store"}, t0, HLC{t0 + 50, 9, "c"}, HLC{t0 + 50, 10, "store"}},
		{"last and remote tie, last counter higher", HLC{t0 + 50, 12, "store"}, t0, HLC{t0 + 50, 9, "c"}, HLC{t0 + 50, 13, "store"}},
		{"remote counter exhausted: next millisecond", HLC{}, t0, HLC{t0, math.MaxUint64, "c"}, HLC{t0 + 1, 0, "store"}},
		{"unpadded docs-form remote", HLC{}, t0, HLC{t0, 1, "StateStore"}, HLC{t0, 2, "store"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newTestClock(t, tc.wallMs)
			if !tc.last.IsZero() {
				c.Observe(tc.last)
			}
			got, err := c.Update(tc.remote)
			if err != nil {
				t.Fatalf("Update: %v", err)
			}
			if got != tc.want {
				t.Errorf("Update(%v) = %v, want %v", tc.remote, got, tc.want)
			}
			// docs/state-store-protocol.md#versions-hlc: the returned version is always greater than the
			// request's __ts.
			if Compare(got, tc.remote) <= 0 {
				t.Errorf("Update result %v not greater than remote %v", got, tc.remote)
			}
			if next := c.Now(); Compare(next, got) <= 0 {
				t.Errorf("Now() after Update = %v, not greater than %v", next, got)
			}
		})
	}
}

func TestUpdateRejectsSkewWithoutChange(t *testing.T) {
	c, _ := newTestClock(t, t0)
	before := c.Now()
	if _, err := c.Update(HLC{t0 + 60_001, 0, "c"}); !errors.Is(err, ErrClockSkew) {
		t.Fatalf("Update far future = %v, want ErrClockSkew", err)
	}
	if got := c.Now(); got != (HLC{before.WallMs, before.Counter + 1, "store"}) {
		t.Errorf("clock moved by a rejected update: %v after %v", got, before)
	}
}

func TestSkewDoesNotRatchet(t *testing.T) {
	// Accepting a timestamp 60s ahead must not let the next one be 120s ahead.
	c, _ := newTestClock(t, t0)
	if _, err := c.Update(HLC{t0 + 60_000, 0, "c"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Update(HLC{t0 + 120_000, 0, "c"}); !errors.Is(err, ErrClockSkew) {
		t.Errorf("second lead accepted: %v", err)
	}
}

func TestObserve(t *testing.T) {
	c, _ := newTestClock(t, t0)
	c.Observe(HLC{t0 + 99_000_000, 4, "other-node"}) // far ahead: no skew check
	if got, want := c.Now(), (HLC{t0 + 99_000_000, 5, "store"}); got != want {
		t.Errorf("Now after Observe = %v, want %v", got, want)
	}
	c.Observe(HLC{t0, 0, "z"}) // older: no effect
	if got, want := c.Now(), (HLC{t0 + 99_000_000, 6, "store"}); got != want {
		t.Errorf("Now after older Observe = %v, want %v", got, want)
	}
}

func TestIncrementSaturates(t *testing.T) {
	got := increment(math.MaxUint64, math.MaxUint64, "n")
	if got != (HLC{math.MaxUint64, math.MaxUint64, "n"}) {
		t.Errorf("increment at max = %v", got)
	}
}

func TestConcurrentReadingsUnique(t *testing.T) {
	c, w := newTestClock(t, t0)
	const goroutines, each = 4, 500
	results := make(chan HLC, goroutines*each)
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if i%50 == 0 {
					w.Set(t0 + int64(g*7-i)) // wall clock jumps both ways
				}
				if i%3 == 0 {
					h, err := c.Update(HLC{t0, uint64(i), "c"})
					if err != nil {
						t.Error(err)
						return
					}
					results <- h
					continue
				}
				results <- c.Now()
			}
		}(g)
	}
	wg.Wait()
	close(results)
	seen := make(map[HLC]bool)
	for h := range results {
		if seen[h] {
			t.Fatalf("reading %v issued twice", h)
		}
		seen[h] = true
	}
}
