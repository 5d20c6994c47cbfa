// Package latency is a fixed-bucket histogram of durations for hot paths: an observation is a
// short scan of the bounds and two atomic adds, no lock, no allocation. A Prometheus collector
// reads a Snapshot at scrape time (prometheus.MustNewConstHistogram takes its fields as they are),
// so the packages that observe do not depend on Prometheus.
package latency

import (
	"sync/atomic"
	"time"
)

// Histogram counts durations into buckets with the upper bounds (seconds) it was made with. The
// zero value is not usable: use New.
type Histogram struct {
	bounds []float64       // ascending, seconds
	counts []atomic.Uint64 // by bounds index; the last for +Inf
	sumNS  atomic.Int64
}

// New returns a histogram with the given ascending upper bounds in seconds.
func New(bounds []float64) *Histogram {
	return &Histogram{bounds: bounds, counts: make([]atomic.Uint64, len(bounds)+1)}
}

// Observe adds one duration.
func (h *Histogram) Observe(d time.Duration) {
	s := d.Seconds()
	i := 0
	for i < len(h.bounds) && s > h.bounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNS.Add(int64(d))
}

// Since observes the time elapsed since t0.
func (h *Histogram) Since(t0 time.Time) { h.Observe(time.Since(t0)) }

// Snapshot is a histogram in the Prometheus form: Buckets[upper bound in seconds] is the
// cumulative count of observations at most that long; Count includes those above every bound.
type Snapshot struct {
	Count   uint64
	Sum     float64 // seconds
	Buckets map[float64]uint64
}

// Snapshot reads the counts (each atomically; an observation made meanwhile may be in Count and
// not yet in Sum).
func (h *Histogram) Snapshot() Snapshot {
	out := Snapshot{Buckets: make(map[float64]uint64, len(h.bounds))}
	for i := range h.counts {
		out.Count += h.counts[i].Load()
		if i < len(h.bounds) {
			out.Buckets[h.bounds[i]] = out.Count
		}
	}
	out.Sum = time.Duration(h.sumNS.Load()).Seconds()
	return out
}

// Add merges o (a snapshot of a histogram with the same bounds, or an empty one) into s, for a
// collector summing the histograms of several instances.
func (s *Snapshot) Add(o Snapshot) {
	if s.Buckets == nil {
		s.Buckets = make(map[float64]uint64, len(o.Buckets))
	}
	s.Count += o.Count
	s.Sum += o.Sum
	for ub, n := range o.Buckets {
		s.Buckets[ub] += n
	}
}

// Empty is a snapshot with no observations and the given bounds (for an instance not started yet).
func Empty(bounds []float64) Snapshot {
	out := Snapshot{Buckets: make(map[float64]uint64, len(bounds))}
	for _, ub := range bounds {
		out.Buckets[ub] = 0
	}
	return out
}

// HandlerBuckets suit a call that does I/O: 500 µs to 30 s.
var HandlerBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
