package broker

import (
	"sync/atomic"
	"time"
)

// CommitBuckets are the upper bounds, in seconds, of the store commit latency histogram: from a
// write without fsync (memory, tmpfs) to a slow disk's fsync.
var CommitBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

// latencies is a fixed-bucket histogram of durations, updated with two atomic adds and a short
// scan per observation: cheap enough for every store commit (at most one per fsync).
type latencies struct {
	counts [15]atomic.Uint64 // by CommitBuckets index; the last for +Inf
	sumNS  atomic.Int64
}

func (h *latencies) observe(d time.Duration) {
	s := d.Seconds()
	i := 0
	for i < len(CommitBuckets) && s > CommitBuckets[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNS.Add(int64(d))
}

// Histogram is a snapshot of a latency histogram in the Prometheus form: Buckets[upper bound in
// seconds] is the cumulative count of observations at most that long.
type Histogram struct {
	Count   uint64
	Sum     float64 // seconds
	Buckets map[float64]uint64
}

func (h *latencies) snapshot() Histogram {
	out := Histogram{Buckets: make(map[float64]uint64, len(CommitBuckets))}
	for i := range h.counts {
		out.Count += h.counts[i].Load()
		if i < len(CommitBuckets) {
			out.Buckets[CommitBuckets[i]] = out.Count
		}
	}
	out.Sum = time.Duration(h.sumNS.Load()).Seconds()
	return out
}
