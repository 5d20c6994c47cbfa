package connector

import "sync/atomic"

// Counters are the connector's monotonic counters, safe for concurrent use.
type Counters struct {
	Received   atomic.Int64 // telemetry messages handed to the handler (every delivery)
	Written    atomic.Int64 // rows appended durably
	Duplicates atomic.Int64 // deliveries skipped because their row exists
	Rejected   atomic.Int64 // messages sent to the dead-letter topic
	Failed     atomic.Int64 // deliveries that returned an error (redelivered)
	Configs    atomic.Int64 // asset configurations applied
}

// Snapshot returns the counters by name, for /metrics.
func (c *Counters) Snapshot() map[string]int64 {
	return map[string]int64{
		"received":           c.Received.Load(),
		"written":            c.Written.Load(),
		"duplicates_skipped": c.Duplicates.Load(),
		"rejected":           c.Rejected.Load(),
		"failed":             c.Failed.Load(),
		"configs":            c.Configs.Load(),
	}
}
