package statekv

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dapr/components-contrib/state"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mqdapr/mqdapr/internal/latency"
	"github.com/mqdapr/mqdapr/internal/pluggable"
)

// The component's Prometheus metrics, kept where daprd's calls come in (Pluggable): each call is
// timed into a fixed-bucket histogram by operation and its error, if any, classified; a Collector
// reads them at scrape time. No label is a key or a client id.
const ns = "mqdapr_state_"

// Operations, the values of the operation label.
const (
	opGet = iota
	opSet
	opDelete
	opBulkGet
	opBulkSet
	opBulkDelete
	numOps
)

var opNames = [numOps]string{"get", "set", "delete", "bulk_get", "bulk_set", "bulk_delete"}

// Error kinds, the values of the error label.
const (
	errETagMismatch = iota
	errETagInvalid
	errOther
	numErrs
)

var errNames = [numErrs]string{"etag_mismatch", "etag_invalid", "other"}

var (
	descOpSeconds = prometheus.NewDesc(ns+"op_duration_seconds",
		"Time one state store call from daprd took, by operation (a bulk call counts once).", []string{"operation"}, nil)
	descOpErrors = prometheus.NewDesc(ns+"op_errors_total",
		"State store calls that failed, by operation and error (etag_mismatch, etag_invalid, other).", []string{"operation", "error"}, nil)
	descConflicts = prometheus.NewDesc(ns+"etag_conflicts_total",
		"ETag mismatches (a compare-and-set or first-write that lost), per key: a bulk call counts each key.", nil, nil)
	descReconnects = prometheus.NewDesc(ns+"reconnects_total",
		"MQTT reconnections after the first connection of an Init.", nil, nil)
)

// storeMetrics are one Store's counters.
type storeMetrics struct {
	seconds    [numOps]*latency.Histogram
	errors     [numOps][numErrs]atomic.Uint64
	conflicts  atomic.Uint64
	reconnects atomic.Uint64
}

func newStoreMetrics() *storeMetrics {
	m := &storeMetrics{}
	for i := range m.seconds {
		m.seconds[i] = latency.New(latency.HandlerBuckets)
	}
	return m
}

// done records one call of op that started at t0 and ended with err; it returns err.
func (m *storeMetrics) done(op int, t0 time.Time, err error) error {
	m.seconds[op].Since(t0)
	if err == nil {
		return nil
	}
	var ee *state.ETagError
	switch {
	case !errors.As(err, &ee):
		m.errors[op][errOther].Add(1)
	case ee.Kind() == state.ETagInvalid:
		m.errors[op][errETagInvalid].Add(1)
	default:
		m.errors[op][errETagMismatch].Add(1)
	}
	m.conflicts.Add(countMismatches(err))
	return err
}

// countMismatches counts the ETag mismatches in err: one for a single call, one per key for the
// joined errors of a bulk call.
func countMismatches(err error) uint64 {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var n uint64
		for _, e := range j.Unwrap() {
			n += countMismatches(e)
		}
		return n
	}
	var ee *state.ETagError
	if errors.As(err, &ee) && ee.Kind() == state.ETagMismatch {
		return 1
	}
	return 0
}

// connectionUp returns the function to call on every connection of one Init: it counts every
// connection after the first as a reconnection.
func (m *storeMetrics) connectionUp() func() {
	var mu sync.Mutex
	first := true
	return func() {
		mu.Lock()
		defer mu.Unlock()
		if !first {
			m.reconnects.Add(1)
		}
		first = false
	}
}

// Get is Store.Get, timed.
func (p *Pluggable) Get(ctx context.Context, req *state.GetRequest) (*state.GetResponse, error) {
	t0 := time.Now()
	res, err := p.Store.Get(ctx, req)
	return res, p.m.done(opGet, t0, err)
}

// BulkGet is Store.BulkGet, timed (per-key failures are in the items, not counted as errors).
func (p *Pluggable) BulkGet(ctx context.Context, reqs []state.GetRequest, opts state.BulkGetOpts) ([]state.BulkGetResponse, error) {
	t0 := time.Now()
	res, err := p.Store.BulkGet(ctx, reqs, opts)
	return res, p.m.done(opBulkGet, t0, err)
}

// Collector is a prometheus.Collector over every Pluggable instance in the process (daprd creates
// one per Component of this type), summed.
type Collector struct {
	instances pluggable.List[*Pluggable]
}

// NewCollector returns a collector with no instance.
func NewCollector() *Collector { return &Collector{} }

// Add makes the collector count p; it returns p, for use in the SDK's factory.
func (c *Collector) Add(p *Pluggable) *Pluggable { return c.instances.Add(p) }

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descOpSeconds
	ch <- descOpErrors
	ch <- descConflicts
	ch <- descReconnects
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	list := c.instances.All()
	var secs [numOps]latency.Snapshot
	var errs [numOps][numErrs]uint64
	var conflicts, reconnects uint64
	for op := range secs {
		secs[op] = latency.Empty(latency.HandlerBuckets)
	}
	for _, p := range list {
		m := p.m
		for op := range secs {
			secs[op].Add(m.seconds[op].Snapshot())
			for e := range errs[op] {
				errs[op][e] += m.errors[op][e].Load()
			}
		}
		conflicts += m.conflicts.Load()
		reconnects += m.reconnects.Load()
	}
	for op, h := range secs {
		ch <- prometheus.MustNewConstHistogram(descOpSeconds, h.Count, h.Sum, h.Buckets, opNames[op])
		for e, n := range errs[op] {
			ch <- prometheus.MustNewConstMetric(descOpErrors, prometheus.CounterValue, float64(n), opNames[op], errNames[e])
		}
	}
	ch <- prometheus.MustNewConstMetric(descConflicts, prometheus.CounterValue, float64(conflicts))
	ch <- prometheus.MustNewConstMetric(descReconnects, prometheus.CounterValue, float64(reconnects))
}
