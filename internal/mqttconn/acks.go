package mqttconn

import (
	"errors"
	"net"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho/session"
)

// Manual acknowledgements (Options.ManualAcks) are sent by an ackQueue of the connection the
// messages arrived on, not by paho: paho's own manual acks leave from a ticker, one write system
// call per PUBACK, and the ticker runs when idle too. The queue keeps the QoS 1/2 messages of one
// connection in receive order, and whenever the oldest are acknowledged it sends them, in that
// order [MQTT-4.6.0-2], all QoS 1 PUBACKs that are ready in one write: at most one write every
// AckFlushInterval, the first at once. paho is told to acknowledge automatically, through a
// session (deferAckSession) whose Ack does nothing: the PUBACK leaves only when the caller's
// Received.Ack made it ready.

// Errors of Ack.Send.
var (
	// ErrAckConnectionGone: the connection the message arrived on is closed; the broker
	// redelivers the message on the next one.
	ErrAckConnectionGone = errors.New("the connection the message arrived on is closed")
	// ErrAckUnknown: the message was acknowledged already, or is not one of the connection's.
	ErrAckUnknown = errors.New("no such unacknowledged message on the connection")
)

// deferAckSession is paho's session state with Ack left to the ackQueue.
type deferAckSession struct {
	session.SessionManager
}

// Ack is called by paho when its handlers returned: the ackQueue sends the acknowledgement later.
func (deferAckSession) Ack(*packets.Publish) error { return nil }

// ackQueue is one connection's acknowledgements in receive order.
type ackQueue struct {
	conn     net.Conn
	sess     session.SessionManager // paho's state: QoS 2's PUBREC is sent through it (it records it)
	interval time.Duration

	mu      sync.Mutex // guards the fields below
	order   []ackEntry // messages of the connection not acknowledged on the wire yet, in receive order
	ready   int        // how many of order, from the start, are acknowledged by the caller
	closed  bool
	pending chan struct{} // one token: something became ready
	done    chan struct{} // closed by close: the writer exits
	exited  chan struct{}
}

type ackEntry struct {
	pid   uint16
	qos   byte
	acked bool
}

func newAckQueue(conn net.Conn, sess session.SessionManager, interval time.Duration) *ackQueue {
	q := &ackQueue{conn: conn, sess: sess, interval: interval,
		pending: make(chan struct{}, 1), done: make(chan struct{}), exited: make(chan struct{})}
	go q.run()
	return q
}

// add records a received QoS 1/2 message, in receive order (paho's single router goroutine).
func (q *ackQueue) add(pid uint16, qos byte) Ack {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.order = append(q.order, ackEntry{pid: pid, qos: qos})
	}
	return Ack{q: q, pid: pid}
}

// ack marks pid acknowledged by the caller; the writer sends it once every older message is.
func (q *ackQueue) ack(pid uint16) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrAckConnectionGone
	}
	for i := q.ready; i < len(q.order); i++ {
		if q.order[i].pid == pid && !q.order[i].acked {
			q.order[i].acked = true
			if i == q.ready {
				for q.ready < len(q.order) && q.order[q.ready].acked {
					q.ready++
				}
				select {
				case q.pending <- struct{}{}:
				default:
				}
			}
			return nil
		}
	}
	return ErrAckUnknown
}

// run writes what is ready, at most once per interval.
func (q *ackQueue) run() {
	defer close(q.exited)
	var last time.Time
	for {
		select {
		case <-q.pending:
		case <-q.done:
			return
		}
		if wait := q.interval - time.Since(last); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-q.done:
				t.Stop()
				return
			}
		}
		last = time.Now()
		q.flush()
	}
}

// flush sends every acknowledgement that is ready, in order: the QoS 1 PUBACKs of a run in one
// write, a QoS 2 PUBREC through paho's session state.
func (q *ackQueue) flush() {
	q.mu.Lock()
	batch := q.order[:q.ready:q.ready]
	q.order, q.ready = q.order[q.ready:], 0
	q.mu.Unlock()
	var buf []byte
	for _, e := range batch {
		if e.qos == 1 {
			// PUBACK, reason Success and no properties left out [MQTT-3.4.2.1]: remaining length 2.
			buf = append(buf, packets.PUBACK<<4, 2, byte(e.pid>>8), byte(e.pid))
			continue
		}
		q.write(buf)
		buf = buf[:0]
		_ = q.sess.Ack(&packets.Publish{QoS: e.qos, PacketID: e.pid})
	}
	q.write(buf)
}

// write sends b in one write, under the connection's lock when it has one (paho's packets take it).
// An error means the connection is lost: paho's reader sees it too, and the broker resends the
// messages on the next connection.
func (q *ackQueue) write(b []byte) {
	if len(b) == 0 {
		return
	}
	if l, ok := q.conn.(sync.Locker); ok {
		l.Lock()
		defer l.Unlock()
	}
	_, _ = q.conn.Write(b)
}

// close stops the writer and refuses later acks: the messages not acknowledged on the wire are
// redelivered on the next connection. With flush, it first waits for the writer and sends what is
// ready (a clean disconnection); without, it does not wait (the connection is lost).
func (q *ackQueue) close(flush bool) {
	q.mu.Lock()
	first := !q.closed
	if first {
		q.closed = true
		close(q.done)
	}
	q.mu.Unlock()
	if flush && first {
		<-q.exited
		q.flush()
	}
}

// Ack acknowledges one received QoS 1/2 message on the connection it arrived on.
type Ack struct {
	q   *ackQueue
	pid uint16
}

// Send makes the acknowledgement ready; it leaves once every message received before it on the
// same connection is acknowledged too. ErrAckConnectionGone: that connection is closed, and the
// broker redelivers the message on the next one.
func (a Ack) Send() error {
	if a.q == nil {
		return nil // QoS 0, or no manual acknowledgements
	}
	return a.q.ack(a.pid)
}
