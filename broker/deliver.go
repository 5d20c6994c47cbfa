package broker

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Delivery to one connection, for services whose messages belong to one client alone (the
// key-value store's KEYNOTIFY notifications): no subscription is consulted, so the message reaches
// that client whether or not it subscribed, once, and no other client through any filter.

// ConnID identifies one network connection of a client: a client that reconnects, or whose
// session is taken over, is on a new ConnID. Zero is never used by a connection.
type ConnID uint64

// ErrNotConnected is returned by Deliver when the client has no connection, or not the one asked for.
var ErrNotConnected = errors.New("broker: client not connected")

// Deliverer sends a message to one connection of one client, not through subscriptions. The
// *Broker passed to Service.Handle as its Publisher implements it.
type Deliverer interface {
	Deliver(ctx context.Context, clientID string, id ConnID, msg *Message) error
}

// ConnectionObserver is implemented by a Service that keeps per-connection state (the key-value
// store's KEYNOTIFY registrations). ConnectionClosed is called, outside the broker's lock, once for
// every connection that was accepted (CONNACK 0x00) when it ends, whatever ends it (session
// takeover included). A new connection of the same client has another ConnID, so state made on it
// is told apart from the old connection's however late the old one's end is reported.
type ConnectionObserver interface {
	ConnectionClosed(clientID string, id ConnID)
}

type connIDKey struct{}

// ConnectionOf returns the connection that sent the PUBLISH a Service.Handle call serves, read from
// Handle's ctx; false for a ctx that does not come from the broker.
func ConnectionOf(ctx context.Context) (ConnID, bool) {
	id, ok := ctx.Value(connIDKey{}).(ConnID)
	return id, ok
}

type clientKey struct{}

// ClientOf returns the client, as the Authorizer knows it (client ID, user name, authentication
// state), that sent the PUBLISH a Service.Handle call serves, read from Handle's ctx; false for a
// ctx that does not come from the broker. The key-value store decides key access with it.
func ClientOf(ctx context.Context) (Client, bool) {
	c, ok := ctx.Value(clientKey{}).(Client)
	return c, ok
}

// withConnID returns ctx carrying the connection's id for ConnectionOf.
func withConnID(ctx context.Context, id ConnID) context.Context {
	return context.WithValue(ctx, connIDKey{}, id)
}

// Deliver queues msg for clientID's session alone while id is that session's current connection
// (id 0: whichever connection it has), with the subscription identifier of the session's own
// matching subscription if it has one. It returns ErrNotConnected when the client is not connected
// (nothing is kept for it), ErrQuotaExceeded when its queue is full, ErrInvalidTopic or
// ErrInvalidQoS for a bad msg, ErrClosed after Close. Like Publish it returns once msg is queued,
// durably when the session is stored; an entry queued for a persistent session is sent again on
// its next connection if this one ends before the client acknowledges it (QoS 1 and 2).
func (b *Broker) Deliver(ctx context.Context, clientID string, id ConnID, msg *Message) error {
	if err := b.checkMessage(msg); err != nil {
		return err
	}
	now := time.Now()
	m := *msg
	m.from = ""
	m.stamp(now)
	var ops []op
	b.mu.Lock()
	s := b.sessions[clientID]
	if s == nil || s.conn == nil || (id != 0 && s.conn.id != id) {
		b.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrNotConnected, clientID)
	}
	subID := s.ownSubID(m.Topic)
	if m.QoS == 0 {
		if s.conn.sendQoS0(m.toPublish(0, false, subID, now)) {
			b.stats.out(0)
		} else {
			b.stats.DroppedQoS0.Add(1)
		}
		b.mu.Unlock()
		return nil
	}
	if b.queuedBytes+entrySize(&m) > b.opts.MaxQueuedBytes || s.queueLen() >= b.opts.MaxSessionQueue {
		b.stats.refuse(CodeQuotaExceeded)
		b.mu.Unlock()
		return ErrQuotaExceeded
	}
	e := b.newEntry(&m, m.QoS, false, subID, nil)
	e.sess = s
	s.pushQueued(e)
	if s.persistent {
		ops = append(ops, op{kind: opPutEntry, owner: s.ownerKey(), seq: e.seq, val: e.encode()})
	} else {
		e.committed = true
	}
	done := make(chan error, 1)
	b.commitRouted([]*entry{e}, now, ops, func(err error) { done <- err })
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ownSubID returns the smallest subscription identifier of s's non-shared subscriptions matching
// topic, 0 for none. Caller holds b.mu.
func (s *session) ownSubID(topic string) int {
	id := 0
	for _, sub := range s.subs {
		if sub.Group == "" && sub.SubID != 0 && matchTopic(sub.Filter, topic) && (id == 0 || sub.SubID < id) {
			id = sub.SubID
		}
	}
	return id
}

// connectionClosed tells the services that c has ended: ClientObserver (only when c still held
// its session, clientGone) and ConnectionObserver, service by service in Options.Services order.
// Caller does not hold b.mu.
func (b *Broker) connectionClosed(c *conn, clientGone bool) {
	for _, svc := range b.opts.Services {
		if o, ok := svc.(ClientObserver); ok && clientGone {
			o.ClientDisconnected(c.clientID)
		}
		if o, ok := svc.(ConnectionObserver); ok {
			o.ConnectionClosed(c.clientID, c.id)
		}
	}
}
