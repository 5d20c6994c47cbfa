package broker

import "github.com/mqdapr/mqdapr/internal/latency"

// CommitBuckets are the upper bounds, in seconds, of the store commit latency histogram: from a
// write without fsync (memory, tmpfs) to a slow disk's fsync.
var CommitBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

// Histogram is a snapshot of a latency histogram in the Prometheus form: Buckets[upper bound in
// seconds] is the cumulative count of observations at most that long.
type Histogram = latency.Snapshot
