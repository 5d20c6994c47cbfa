package latency

import (
	"testing"
	"time"
)

func TestBucketsAreCumulative(t *testing.T) {
	h := New([]float64{0.001, 0.01})
	for _, d := range []time.Duration{500 * time.Microsecond, time.Millisecond, 5 * time.Millisecond, time.Second} {
		h.Observe(d)
	}
	s := h.Snapshot()
	if s.Count != 4 || s.Buckets[0.001] != 2 || s.Buckets[0.01] != 3 {
		t.Fatalf("snapshot %+v, want count 4, <=1ms 2 (the bound is inclusive), <=10ms 3", s)
	}
	if want := (500*time.Microsecond + time.Millisecond + 5*time.Millisecond + time.Second).Seconds(); s.Sum != want {
		t.Fatalf("sum %v, want %v", s.Sum, want)
	}
	var total Snapshot
	total.Add(s)
	total.Add(s)
	total.Add(Empty([]float64{0.001, 0.01}))
	if total.Count != 8 || total.Buckets[0.01] != 6 {
		t.Fatalf("merged %+v", total)
	}
}

// The cost a timed call adds: two clock reads and one observation, against the same call untimed.
func BenchmarkTimedCall(b *testing.B) {
	h := New(HandlerBuckets)
	f := func() error { return nil }
	b.Run("untimed", func(b *testing.B) {
		for b.Loop() {
			_ = f()
		}
	})
	b.Run("timed", func(b *testing.B) {
		for b.Loop() {
			t0 := time.Now()
			_ = f()
			h.Since(t0)
		}
	})
	b.Run("timed-parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				t0 := time.Now()
				_ = f()
				h.Since(t0)
			}
		})
	})
}
