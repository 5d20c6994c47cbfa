// Package pubsubmqtt5 is a Dapr pub/sub component over MQTT v5 (paho.golang autopaho), served as the
// pluggable component "pubsub.mqttv5". It gives Dapr apps the broker-side guarantees for zero
// message loss: QoS 1, a persistent session, acknowledgement only after the app's handler
// succeeded, Receive Maximum flow control with bounded parallel handlers, shared subscriptions,
// retained messages and message expiry.
package pubsubmqtt5

import (
	"context"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dapr/components-contrib/pubsub"
	"github.com/dapr/kit/logger"
	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/mqdapr/mqdapr/components/pubsub-mqtt5/partition"
	"github.com/mqdapr/mqdapr/internal/mqttconn"
)

// ComponentName is the pluggable component's name: its socket is mqttv5.sock and its type in a
// Component YAML is pubsub.mqttv5.
const ComponentName = "mqttv5"

// PubSub implements contrib's pubsub.PubSub over MQTT v5.
type PubSub struct {
	log logger.Logger

	mu     sync.Mutex // guards md, conn, pub, closed, and the Init/Close transitions
	md     Metadata
	props  map[string]string
	conn   *mqttconn.Conn // the subscribing connection
	pub    *mqttconn.Conn // the publishing connection: conn itself with publishConnection "shared"
	subs   *registry
	disp   *dispatcher
	closed bool

	stats Stats
	m     *instanceMetrics // metrics.go
}

// Stats are counters an operator can read (and tests assert on).
type Stats struct {
	Received      atomic.Uint64 // messages received from the broker
	Delivered     atomic.Uint64 // handler calls that succeeded
	Acked         atomic.Uint64 // acknowledgements handed to the client
	HandlerErrors atomic.Uint64 // handler calls that failed (each is retried)
	DeadLettered  atomic.Uint64 // messages moved to the dead-letter topic
	// DeadLetterFailures counts dead-letter publishes not accepted with PUBACK 0x00 (no subscriber,
	// refused, not acknowledged): each is retried with backoff, the original kept unacknowledged.
	DeadLetterFailures atomic.Uint64
	Exhausted          atomic.Uint64 // messages past maxDeliveryAttempts with no dead-letter topic (still retried)
	Unsubscribed       atomic.Uint64 // held messages released after their subscription was removed
	Held               atomic.Int64  // messages waiting for a subscription stream to open
	InFlight           atomic.Int64  // handler calls running now
	MaxInFlight        atomic.Int64  // the most handler calls seen running at once
}

// New returns an uninitialised component. It does no I/O.
func New(log logger.Logger) *PubSub {
	if log == nil {
		log = logger.NewLogger("mqttv5-pubsub")
	}
	return &PubSub{log: log, m: newInstanceMetrics()}
}

// Init connects to the broker. daprd calls Init again on the same instance when daprd restarts:
// with the same metadata that is a no-op that keeps the session, the subscriptions and the held
// messages; with different metadata the old connection is closed first.
func (p *PubSub) Init(ctx context.Context, meta pubsub.Metadata) error {
	md, unknown, err := parseMetadata(meta.Properties)
	if err != nil {
		return err
	}
	for _, k := range unknown {
		p.log.Warnf("mqttv5 pub/sub: unknown metadata key %q is ignored (see metadata.yaml for the accepted keys)", k)
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil {
		if reflect.DeepEqual(p.props, meta.Properties) && !p.closed {
			p.log.Infof("mqttv5 pub/sub: Init with unchanged metadata: keeping the connection and session")
			return nil
		}
		p.shutdownLocked()
	}
	if md.MaxDeliveryAttempts > 0 && md.DeadLetterTopic == "" {
		p.log.Infof("mqttv5 pub/sub: no deadLetterTopic: a message failing %d times is reported and retried for ever, holding back the acknowledgements after it", md.MaxDeliveryAttempts)
	}

	clientID, err := md.Settings.ResolveClientID(mqttconn.KindPubSub)
	if err != nil {
		return err
	}
	dir := md.StateDir
	if dir == "" {
		dir = defaultStateDir()
	}
	rec, err := openRecord(dir, clientID)
	if err != nil {
		p.log.Errorf("mqttv5 pub/sub: the record of subscribed filters is not kept: %v. Filters an earlier run left in the broker session cannot be removed; their messages are released after unsubscribeGrace", err)
		rec = &filterRecord{}
	}
	subs := newRegistry(rec, clientID, md.QoS, md.UnsubscribeGrace)
	disp := newDispatcher(int(md.ReceiveMaximum), md.Ordering)
	// The receive path works from this snapshot and never takes p.mu: Close holds p.mu while it
	// waits for running handlers.
	l := &live{md: md, subs: subs, disp: disp}
	p.md, p.subs, p.disp, p.closed = md, subs, disp, false
	p.props = cloneMap(meta.Properties)

	up := p.m.connectionUp() // metrics.go: reconnections
	conn, err := mqttconn.Dial(ctx, mqttconn.Options{
		Settings:         md.Settings,
		Kind:             mqttconn.KindPubSub,
		ReceiveMaximum:   md.ReceiveMaximum,
		ManualAcks:       true,
		AckFlushInterval: md.AckFlushInterval,
		OnPublish:        func(rc mqttconn.Received) { p.onPublish(l, rc) },
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			up()
			disp.goOwned(func() { p.resubscribe(cm, subs, disp) })
		},
		Logger: p.log,
	})
	if err != nil {
		disp.stop(0)
		p.subs, p.disp = nil, nil
		return err
	}
	pub := conn
	if md.PublishConnection == PublishConnectionSeparate {
		// Publishes on a connection of their own: on the subscribing one a PUBACK can wait behind
		// deliveries (Mosquitto's Nagle algorithm holds it while a delivery is unacknowledged).
		// Same session settings: QoS 1 publishes not acknowledged when the connection drops are
		// sent again on the resumed session.
		pub, err = mqttconn.Dial(ctx, mqttconn.Options{
			Settings: md.Settings,
			Kind:     mqttconn.KindPubSubPublish,
			Logger:   p.log,
		})
		if err != nil {
			disp.stop(0)
			closeConn(p.log, conn)
			p.subs, p.disp = nil, nil
			return err
		}
	}
	p.conn, p.pub = conn, pub
	l.conn.Store(conn)
	l.pub.Store(pub)
	disp.goOwned(func() { p.reconcile(l) })
	return nil
}

// live is what the receive path of one Init needs, fixed for its lifetime.
type live struct {
	md   Metadata
	conn atomic.Pointer[mqttconn.Conn] // nil until the first connection is up
	pub  atomic.Pointer[mqttconn.Conn] // the publishing connection (dead letters), nil until up
	subs *registry
	disp *dispatcher
	rr   atomic.Uint32 // round-robin count: the partitioning hash with ordering none
}

// route sets m's ordering key and partitioning hash. With ordering "key", a message without the
// key (payload not JSON, field or property missing) is ordered by its topic.
func (l *live) route(m *inbound) {
	switch l.md.Ordering {
	case OrderingNone:
		m.hash = l.rr.Add(1)
		return
	case OrderingKey:
		if k, ok := l.md.key.of(m.pub); ok {
			m.key = k
		} else {
			m.key = m.pub.Topic
		}
	default:
		m.key = m.pub.Topic
	}
	m.hash = partition.Hash(m.key)
}

// Features advertises message TTL (MQTT message expiry) and wildcard subscriptions.
// Bulk publish is not advertised: daprd then publishes entry by entry, and every failure reaches
// the caller.
func (p *PubSub) Features() []pubsub.Feature {
	return []pubsub.Feature{pubsub.FeatureMessageTTL, pubsub.FeatureSubscribeWildcards}
}

// Close stops taking new messages, waits up to shutdownTimeout for running handlers so that their
// messages are acknowledged, and disconnects keeping the session (messages not yet handled stay
// with the broker). Safe to call more than once and after a failed Init.
func (p *PubSub) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.shutdownLocked()
	p.closed = true
	return nil
}

func (p *PubSub) shutdownLocked() {
	if p.disp != nil {
		p.disp.stop(p.md.ShutdownTimeout)
	}
	if p.conn != nil {
		closeConn(p.log, p.conn)
	}
	if p.pub != nil && p.pub != p.conn {
		closeConn(p.log, p.pub)
	}
	p.conn, p.pub, p.disp, p.subs = nil, nil, nil, nil
}

// closeConn disconnects c cleanly (the session is kept), within 5 s.
func closeConn(log logger.Logger, c *mqttconn.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		log.Warnf("mqttv5 pub/sub: disconnect of %q: %v", c.ClientID(), err)
	}
}

// state returns the live connection pieces or the error for calls made before Init / after Close.
func (p *PubSub) state() (*mqttconn.Conn, *registry, *dispatcher, Metadata, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn == nil {
		return nil, nil, nil, p.md, p.notOpenLocked()
	}
	return p.conn, p.subs, p.disp, p.md, nil
}

// publisher returns the publishing connection and the subscription registry (Publish asks it
// about subscriptions in progress), or the error for calls made before Init / after Close.
func (p *PubSub) publisher() (*mqttconn.Conn, *registry, Metadata, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pub == nil {
		return nil, nil, p.md, p.notOpenLocked()
	}
	return p.pub, p.subs, p.md, nil
}

func (p *PubSub) notOpenLocked() error {
	if p.closed {
		return ErrClosed
	}
	return ErrNotInitialized
}

// StatsSnapshot exposes the counters.
func (p *PubSub) StatsSnapshot() *Stats { return &p.stats }

// ClientID returns the MQTT client id of the subscribing connection ("" before Init).
func (p *PubSub) ClientID() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn == nil {
		return ""
	}
	return p.conn.ClientID()
}

// PublishClientID returns the MQTT client id publishes are sent with ("" before Init): ClientID
// with publishConnection "shared", else its own (<ClientID>-pub).
func (p *PubSub) PublishClientID() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pub == nil {
		return ""
	}
	return p.pub.ClientID()
}

func cloneMap(m map[string]string) map[string]string {
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
