// Package brokermetrics exposes the broker's counters to Prometheus: a prometheus.Collector that
// reads the broker's (and the key-value store's) own atomic counters at scrape time, so the broker
// keeps no second set of counters on its hot path.
//
// Names follow the Prometheus conventions (mqdapr_broker_..., _total for counters, _seconds and
// _bytes for units); every label has a small fixed set of values (no topic, key or client id).
package brokermetrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/statestore"
	"github.com/mqdapr/mqdapr/internal/latency"
)

const ns = "mqdapr_broker_"

var (
	descConnections = prometheus.NewDesc(ns+"connections",
		"Current client connections (CONNECT accepted), by MQTT protocol version and transport.",
		[]string{"protocol", "transport"}, nil)
	descConnectionsTotal = prometheus.NewDesc(ns+"connections_total",
		"Client connections accepted (CONNACK 0x00) since start.", nil, nil)
	descSessions = prometheus.NewDesc(ns+"sessions",
		"Sessions, connected or kept for offline clients.", nil, nil)
	descRetained = prometheus.NewDesc(ns+"retained_messages",
		"Retained messages kept.", nil, nil)
	descPacketsIn = prometheus.NewDesc(ns+"packets_in_total",
		"MQTT control packets received after CONNECT.", nil, nil)
	descMessagesIn = prometheus.NewDesc(ns+"messages_in_total",
		"Application messages received (client publishes, wills, services, embedding code), by QoS.",
		[]string{"qos"}, nil)
	descMessagesOut = prometheus.NewDesc(ns+"messages_out_total",
		"Application messages sent to subscribers, by the QoS they were sent at.", []string{"qos"}, nil)
	descQueued = prometheus.NewDesc(ns+"queued_messages",
		"QoS 1/2 messages kept in sessions and shared-subscription groups (queued or in flight).", nil, nil)
	descQueuedBytes = prometheus.NewDesc(ns+"queued_bytes",
		"Approximate memory held by queued and in-flight messages (the bound of -max-queued-bytes).", nil, nil)
	descDropped = prometheus.NewDesc(ns+"qos0_dropped_total",
		"QoS 0 messages dropped for a subscriber whose buffer was full.", nil, nil)
	descRefused = prometheus.NewDesc(ns+"refused_total",
		"Refusals and disconnections by MQTT reason code (code: hexadecimal, reason: its name).",
		[]string{"code", "reason"}, nil)
	descStoreCommits = prometheus.NewDesc(ns+"store_commits_total",
		"Store transactions (one fsync each with a data directory; group commit batches many changes).", nil, nil)
	descStoreOps = prometheus.NewDesc(ns+"store_ops_total",
		"Record changes (puts and deletes) applied by those transactions.", nil, nil)
	descStoreCommitSeconds = prometheus.NewDesc(ns+"store_commit_duration_seconds",
		"Time one store transaction took (write and fsync).", nil, nil)
	descKVOps = prometheus.NewDesc(ns+"kv_ops_total",
		"Key-value store requests by command and result.", []string{"command", "result"}, nil)
	descKVKeys = prometheus.NewDesc(ns+"kv_keys", "Keys in the key-value store.", nil, nil)
)

var qosLabels = [3]string{"0", "1", "2"}

// Collector is a prometheus.Collector for one broker and, optionally, its key-value store.
type Collector struct {
	b  *broker.Broker
	kv *statestore.Engine
}

// New returns the collector of b (started: Stats reads its store) and kv (nil when the broker
// serves no key-value store).
func New(b *broker.Broker, kv *statestore.Engine) *Collector { return &Collector{b: b, kv: kv} }

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descConnections, descConnectionsTotal, descSessions, descRetained, descPacketsIn,
		descMessagesIn, descMessagesOut, descQueued, descQueuedBytes, descDropped, descRefused,
		descStoreCommits, descStoreOps, descStoreCommitSeconds,
	} {
		ch <- d
	}
	if c.kv != nil {
		ch <- descKVOps
		ch <- descKVKeys
	}
}

// Collect implements prometheus.Collector: one snapshot of the counters per scrape.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.b.Stats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	for p := range st.ConnectionsBy {
		for t, n := range st.ConnectionsBy[p] {
			gauge(descConnections, float64(n), broker.Protocols[p], broker.TransportNames[t])
		}
	}
	counter(descConnectionsTotal, float64(st.ConnectionsTotal))
	gauge(descSessions, float64(st.Sessions))
	gauge(descRetained, float64(st.Retained))
	counter(descPacketsIn, float64(st.PacketsIn))
	for q := range qosLabels {
		counter(descMessagesIn, float64(st.MessagesInByQoS[q]), qosLabels[q])
		counter(descMessagesOut, float64(st.MessagesOutByQoS[q]), qosLabels[q])
	}
	gauge(descQueued, float64(st.Queued))
	gauge(descQueuedBytes, float64(st.QueuedBytes))
	counter(descDropped, float64(st.DroppedQoS0))
	for code, n := range st.RefusedByCode {
		counter(descRefused, float64(n), fmt.Sprintf("0x%02X", code), broker.CodeName(code))
	}
	counter(descStoreCommits, float64(st.StoreCommits))
	counter(descStoreOps, float64(st.StoreOps))
	h := st.StoreCommitSeconds
	if h.Buckets == nil { // not started: an empty histogram with the same buckets
		h = latency.Empty(broker.CommitBuckets)
	}
	ch <- prometheus.MustNewConstHistogram(descStoreCommitSeconds, h.Count, h.Sum, h.Buckets)
	if c.kv != nil {
		for _, o := range c.kv.OpCounts() {
			counter(descKVOps, float64(o.N), o.Command, o.Result)
		}
		gauge(descKVKeys, float64(c.kv.Len()))
	}
}
