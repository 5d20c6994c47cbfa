package pubsubmqtt5

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dapr/components-contrib/pubsub"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mqdapr/mqdapr/internal/latency"
	"github.com/mqdapr/mqdapr/internal/pluggable"
)

// The component's Prometheus metrics: Collector reads each instance's Stats at scrape time (the
// receive path only does the atomic adds it already did), plus the handler latency histogram,
// timed around each handler call (callHandler). No label is a topic, a key or a client id.
const ns = "mqdapr_pubsub_"

var (
	descReceived     = prometheus.NewDesc(ns+"received_total", "Messages received from the broker.", nil, nil)
	descDelivered    = prometheus.NewDesc(ns+"delivered_total", "Handler calls that succeeded (the app took the message).", nil, nil)
	descAcked        = prometheus.NewDesc(ns+"acked_total", "Acknowledgements (PUBACK) handed to the MQTT client.", nil, nil)
	descFailures     = prometheus.NewDesc(ns+"handler_failures_total", "Handler calls that failed: each message is retried, or after maxDeliveryAttempts moved to the dead-letter topic.", nil, nil)
	descDeadLettered = prometheus.NewDesc(ns+"dead_lettered_total", "Messages moved to the dead-letter topic (then acknowledged).", nil, nil)
	descDLFailures   = prometheus.NewDesc(ns+"dead_letter_failures_total", "Dead-letter publishes the broker did not accept (each retried with backoff).", nil, nil)
	descExhausted    = prometheus.NewDesc(ns+"exhausted_total", "Messages past maxDeliveryAttempts with no dead-letter topic (still retried).", nil, nil)
	descReleased     = prometheus.NewDesc(ns+"released_unsubscribed_total", "Held messages released (acknowledged) after their subscription was removed.", nil, nil)
	descHeld         = prometheus.NewDesc(ns+"held_messages", "Messages waiting for a subscription stream to open.", nil, nil)
	descInFlight     = prometheus.NewDesc(ns+"handlers_in_flight", "Handler calls running now.", nil, nil)
	descMaxInFlight  = prometheus.NewDesc(ns+"handlers_in_flight_max", "The most handler calls seen running at once.", nil, nil)
	descHandlerSecs  = prometheus.NewDesc(ns+"handler_duration_seconds", "Time one handler call took (daprd and the app), success or failure.", nil, nil)
	descReconnects   = prometheus.NewDesc(ns+"reconnects_total", "MQTT reconnections after the first connection of an Init.", nil, nil)
)

// instanceMetrics are the counters the component keeps besides Stats.
type instanceMetrics struct {
	handler    *latency.Histogram
	reconnects atomic.Uint64
}

func newInstanceMetrics() *instanceMetrics {
	return &instanceMetrics{handler: latency.New(latency.HandlerBuckets)}
}

// callHandler calls h and times it into the handler histogram.
func (p *PubSub) callHandler(ctx context.Context, h pubsub.Handler, msg *pubsub.NewMessage) error {
	t0 := time.Now()
	err := h(ctx, msg)
	p.m.handler.Since(t0)
	return err
}

// connectionUp returns the function to call on every connection of one Init: it counts every
// connection after the first as a reconnection.
func (m *instanceMetrics) connectionUp() func() {
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

// Collector is a prometheus.Collector over every instance of the component in the process (daprd
// creates one per Component of this type), summed.
type Collector struct {
	instances pluggable.List[*PubSub]
}

// NewCollector returns a collector with no instance.
func NewCollector() *Collector { return &Collector{} }

// Add makes the collector count p; it returns p, for use in the SDK's factory.
func (c *Collector) Add(p *PubSub) *PubSub { return c.instances.Add(p) }

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descReceived, descDelivered, descAcked, descFailures, descDeadLettered,
		descDLFailures, descExhausted, descReleased, descHeld, descInFlight, descMaxInFlight, descHandlerSecs, descReconnects} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	list := c.instances.All()
	var received, delivered, acked, failures, dl, dlf, exhausted, released, reconnects uint64
	var held, inFlight, maxInFlight int64
	h := latency.Empty(latency.HandlerBuckets)
	for _, p := range list {
		s := &p.stats
		received += s.Received.Load()
		delivered += s.Delivered.Load()
		acked += s.Acked.Load()
		failures += s.HandlerErrors.Load()
		dl += s.DeadLettered.Load()
		dlf += s.DeadLetterFailures.Load()
		exhausted += s.Exhausted.Load()
		released += s.Unsubscribed.Load()
		held += s.Held.Load()
		inFlight += s.InFlight.Load()
		maxInFlight = max(maxInFlight, s.MaxInFlight.Load())
		reconnects += p.m.reconnects.Load()
		h.Add(p.m.handler.Snapshot())
	}
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	counter(descReceived, received)
	counter(descDelivered, delivered)
	counter(descAcked, acked)
	counter(descFailures, failures)
	counter(descDeadLettered, dl)
	counter(descDLFailures, dlf)
	counter(descExhausted, exhausted)
	counter(descReleased, released)
	counter(descReconnects, reconnects)
	gauge(descHeld, held)
	gauge(descInFlight, inFlight)
	gauge(descMaxInFlight, maxInFlight)
	ch <- prometheus.MustNewConstHistogram(descHandlerSecs, h.Count, h.Sum, h.Buckets)
}
