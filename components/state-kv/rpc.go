package statekv

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/mqdapr/mqdapr/internal/hlc"
	"github.com/mqdapr/mqdapr/internal/mqttconn"
	"github.com/mqdapr/mqdapr/internal/resp3"
)

// Protocol constants (docs/state-store-protocol.md#topics, #mqtt-properties).
const (
	requestTopic   = "statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke"
	contentType    = "application/octet-stream"
	propTimestamp  = "__ts"
	propFence      = "__ft"
	propStatus     = "__stat"
	propStatusMsg  = "__stMsg"
	propProtVer    = "__protVer"
	propSourceID   = "__srcId"
	propPersist    = "aio-persistence"
	protVer        = "1.0"
	statusOK       = "200"
	correlationLen = 16
)

// responseTopicFor is the Rust SDK's / docs' form, so existing BrokerAuthorization rules
// (`clients/{clientId}/services/statestore/#`) apply (docs/state-store-protocol.md#topics).
func responseTopicFor(clientID string) string {
	return "clients/" + clientID + "/services/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke/response"
}

// reply is one decoded response.
type reply struct {
	value   resp3.Value
	version string // __ts; empty when absent
}

// rpc does the request/response correlation over one supervised connection: every request gets
// 16 random bytes of correlation data and a waiter registered before it is published.
//
// The connection has no session (Clean Start 1, Session Expiry 0 on every connection; DESIGN.md,
// "When a write under a lease can land"): a request is sent at most once, on one connection, and its response can
// only come back on that connection. Requests are sent only on a connection whose subscription to
// the response topic is in place (a link that is ready); when that connection is lost, every
// request sent on it that has no response yet fails at once with ErrOutcomeUnknown.
type rpc struct {
	conn      *mqttconn.Conn
	clientID  string
	respTopic string
	clock     *hlc.Clock
	timeout   time.Duration
	persist   bool

	mu      sync.Mutex                    // guards waiters
	waiters map[string]chan *paho.Publish // by correlation data

	lmu    sync.Mutex    // guards the fields below
	cur    *link         // the connection that is up; nil while down
	ready  bool          // cur's response-topic subscription is in place
	readyC chan struct{} // closed when ready becomes true; replaced when it becomes false
	closed chan struct{} // closed by close
}

// link is one network connection, from its CONNACK until it is lost.
type link struct {
	ctx    context.Context // cancelled when the connection is lost or the rpc closes
	cancel context.CancelFunc
	// quota holds one token per request handed to paho and not yet acknowledged, at most the
	// broker's Receive Maximum: the component waits for send quota itself, under the request's
	// send deadline, so paho never has to (paho waits for quota and PUBACK under one context, and
	// the two could not be told apart when it ends).
	quota chan struct{}
}

func newRPC(clientID string, timeout time.Duration, persist bool) (*rpc, error) {
	clock, err := hlc.NewClock(hlc.Options{NodeID: strings.ReplaceAll(clientID, ":", "_")})
	if err != nil {
		return nil, err
	}
	return &rpc{
		clientID: clientID, respTopic: responseTopicFor(clientID), clock: clock,
		timeout: timeout, persist: persist, waiters: map[string]chan *paho.Publish{},
		readyC: make(chan struct{}), closed: make(chan struct{}),
	}, nil
}

// connectionUp records a new connection (autopaho's OnConnectionUp, which runs before the
// connection can be lost) and returns its link; requests wait until subscribed(link).
func (r *rpc) connectionUp(ca *paho.Connack) *link {
	recvMax := 65535 // absent: 65535 (MQTT v5 §3.2.2.3.3)
	if ca != nil && ca.Properties != nil && ca.Properties.ReceiveMaximum != nil && *ca.Properties.ReceiveMaximum > 0 {
		recvMax = int(*ca.Properties.ReceiveMaximum)
	}
	l := &link{quota: make(chan struct{}, recvMax)}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	r.lmu.Lock()
	defer r.lmu.Unlock()
	r.dropLocked()
	select {
	case <-r.closed:
		l.cancel()
	default:
		r.cur = l
	}
	return l
}

// connectionDown records that the connection is lost (autopaho's OnConnectionDown). It does not
// block.
func (r *rpc) connectionDown() {
	r.lmu.Lock()
	defer r.lmu.Unlock()
	r.dropLocked()
}

// subscribed marks l ready, unless it is no longer the connection that is up (a subscription that
// finished after its connection was lost may have gone out on the next one, which subscribes
// itself).
func (r *rpc) subscribed(l *link) {
	r.lmu.Lock()
	defer r.lmu.Unlock()
	if r.cur == l && !r.ready && l.ctx.Err() == nil {
		r.ready = true
		close(r.readyC)
	}
}

// close ends the current link and makes every later wait for a connection fail.
func (r *rpc) close() {
	r.lmu.Lock()
	defer r.lmu.Unlock()
	select {
	case <-r.closed:
	default:
		close(r.closed)
	}
	r.dropLocked()
}

func (r *rpc) dropLocked() {
	if r.cur != nil {
		r.cur.cancel()
		r.cur = nil
	}
	if r.ready {
		r.ready = false
		r.readyC = make(chan struct{})
	}
}

// awaitReady returns the ready link, waiting for one until ctx ends.
func (r *rpc) awaitReady(ctx context.Context) (*link, error) {
	for {
		r.lmu.Lock()
		l, ready, c := r.cur, r.ready, r.readyC
		r.lmu.Unlock()
		if ready {
			return l, nil
		}
		select {
		case <-c:
		case <-r.closed:
			return nil, ErrClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// onPublish hands a response to its waiter. It runs on paho's receive goroutine and never blocks:
// a response nobody waits for any more (timed out) is dropped.
func (r *rpc) onPublish(pr paho.PublishReceived) (bool, error) {
	p := pr.Packet
	if p.Topic != r.respTopic || p.Properties == nil {
		return true, nil
	}
	r.mu.Lock()
	ch, ok := r.waiters[string(p.Properties.CorrelationData)]
	delete(r.waiters, string(p.Properties.CorrelationData))
	r.mu.Unlock()
	if ok {
		ch <- p // capacity 1, one send per registration
	}
	return true, nil
}

// subscribe subscribes to the response topic; called after every (re)connection.
func (r *rpc) subscribe(ctx context.Context, cm *autopaho.ConnectionManager) error {
	sa, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: r.respTopic, QoS: 1}}})
	if sa != nil && (len(sa.Reasons) != 1 || sa.Reasons[0] >= 0x80) { // paho also returns an error then
		reason := "none"
		if len(sa.Reasons) > 0 {
			reason = mqttconn.ReasonString(sa.Reasons[0])
		}
		return fmt.Errorf("%w: the broker refused the subscription to the response topic %q (reason %s); authorise Subscribe on clients/<clientId>/services/statestore/#", ErrRequestFailed, r.respTopic, reason)
	}
	if err != nil {
		return fmt.Errorf("%w: subscribing to the response topic %q: %w", ErrRequestFailed, r.respTopic, err)
	}
	return nil
}

// request is one command to send.
type request struct {
	args    [][]byte
	fence   string // __ft, empty for none
	persist bool   // send aio-persistence (SETs only)
	// sendBy, if not zero, is the time after which the request must not be sent: the end of the
	// safe part of the lease whose token it carries. Waits for a connection and for send quota end
	// then (ErrLeaseExpired, nothing sent).
	sendBy time.Time
}

// do sends req and waits for its response, at most timeout (or ctx). The response's __ts advances
// the local clock. Command errors (`-ERR`) are returned as a reply, not an error. A request that
// may have reached the store but whose response can no longer arrive fails with
// ErrOutcomeUnknown; it is never sent again.
func (r *rpc) do(ctx context.Context, req request) (reply, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.timeout)
		defer cancel()
	}
	payload := resp3.EncodeArray(req.args...)
	if limit := r.conn.MaxPacketSize(); limit > 0 && len(payload)+512 > int(limit) {
		return reply{}, fmt.Errorf("%w: %s %q: the request is %d bytes; the broker accepts packets of at most %d bytes (its Maximum Packet Size)", ErrInvalidValue, req.args[0], req.args[1], len(payload), limit)
	}
	corr := make([]byte, correlationLen)
	_, _ = rand.Read(corr)
	ch := make(chan *paho.Publish, 1)
	r.mu.Lock()
	r.waiters[string(corr)] = ch
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.waiters, string(corr))
		r.mu.Unlock()
	}()

	expiry := uint32(max(1, (r.timeout+time.Second-1)/time.Second))
	props := &paho.PublishProperties{
		ResponseTopic: r.respTopic, CorrelationData: corr, ContentType: contentType, MessageExpiry: &expiry,
	}
	props.User.Add(propTimestamp, r.clock.Now().String())
	if req.fence != "" {
		props.User.Add(propFence, req.fence)
	}
	props.User.Add(propProtVer, protVer)
	props.User.Add(propSourceID, r.clientID)
	if req.persist && r.persist {
		props.User.Add(propPersist, "true")
	}
	msg := &paho.Publish{Topic: requestTopic, QoS: 1, Payload: payload, Properties: props}
	l, acked, err := r.publish(ctx, msg, req)
	if err != nil {
		return reply{}, err
	}
	select {
	case p := <-ch:
		return r.decode(p)
	case <-l.ctx.Done():
		select {
		case p := <-ch: // arrived just before the connection was lost
			return r.decode(p)
		default:
		}
		return reply{}, fmt.Errorf("%w: %s %q: the connection to %s was lost after the request was sent, before its response", ErrOutcomeUnknown, req.args[0], req.args[1], r.conn.URL().Redacted())
	case <-ctx.Done():
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return reply{}, ctx.Err() // the caller gave up
		}
		if !acked {
			return reply{}, fmt.Errorf("%w: %s %q: neither an acknowledgement nor a response from %s in time (%w)", ErrOutcomeUnknown, req.args[0], req.args[1], r.conn.URL().Redacted(), ctx.Err())
		}
		return reply{}, fmt.Errorf("%w: %s %q: the broker at %s acknowledged the request but sent no response in time (%w); does it offer the Azure IoT Operations state store? The component needs one (mqdapr's broker with its key-value service, or AIO's broker)",
			ErrNoResponse, req.args[0], req.args[1], r.conn.URL().Redacted(), ctx.Err())
	}
}

// publish sends msg once, on a ready link, and returns that link and whether the broker
// acknowledged it (PUBACK 0x00). An error means the request is known not to have been applied
// (never sent, or refused with a PUBACK failure code), the caller gave up, or its outcome is
// unknown (ErrOutcomeUnknown). With err nil the response, if any, arrives on the returned link.
//
// The waits before the send, for a ready connection and for send quota, end at req.sendBy when it
// is set, and the deadline is checked once more just before the request is handed to paho; with
// quota in hand paho writes the packet at once. If the link is lost while paho still holds the
// request, paho drops it (there is no session to resend it in).
func (r *rpc) publish(ctx context.Context, msg *paho.Publish, req request) (*link, bool, error) {
	sendCtx := ctx
	if !req.sendBy.IsZero() {
		var cancel context.CancelFunc
		sendCtx, cancel = context.WithDeadline(ctx, req.sendBy)
		defer cancel()
	}
	cm := r.conn.Manager()
	for {
		l, err := r.awaitReady(sendCtx)
		if err != nil {
			return nil, false, r.notSent(ctx, req, err)
		}
		select {
		case l.quota <- struct{}{}:
		case <-l.ctx.Done():
			continue
		case <-sendCtx.Done():
			return nil, false, r.notSent(ctx, req, sendCtx.Err())
		}
		if sendCtx.Err() != nil {
			<-l.quota
			return nil, false, r.notSent(ctx, req, sendCtx.Err())
		}
		pctx, cancel := context.WithCancel(ctx)
		stop := context.AfterFunc(l.ctx, cancel) // paho forgets the request with the connection
		resp, err := cm.Publish(pctx, msg)
		stop()
		cancel()
		switch {
		case mqttconn.NotSent(err):
			<-l.quota
			if sendCtx.Err() != nil {
				return nil, false, r.notSent(ctx, req, err)
			}
			// The connection went down before paho took the request: l is being dropped; wait for
			// that, then for the next ready link.
			select {
			case <-l.ctx.Done():
			case <-sendCtx.Done():
			}
			continue
		case resp != nil && resp.ReasonCode >= 0x80:
			<-l.quota
			reason := mqttconn.ReasonString(resp.ReasonCode)
			if resp.Properties != nil && resp.Properties.ReasonString != "" {
				reason += " (" + resp.Properties.ReasonString + ")"
			}
			return nil, false, fmt.Errorf("%w: the broker refused the request: %s", ErrRequestFailed, reason)
		case err == nil:
			<-l.quota
			return l, true, nil
		}
		// No PUBACK: paho may keep its quota for the request until one arrives, so the token stays
		// taken until the link is gone.
		switch {
		case ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded):
			return nil, false, ctx.Err() // the caller gave up
		case l.ctx.Err() != nil || ctx.Err() != nil:
			return l, false, nil // sent: its response, or the loss of l, decides
		default:
			return nil, false, fmt.Errorf("%w: %s %q: %w", ErrOutcomeUnknown, req.args[0], req.args[1], err)
		}
	}
}

// notSent is the error of a request that was not sent because the wait for a connection or for
// send quota ended with ctx or req.sendBy.
func (r *rpc) notSent(ctx context.Context, req request, err error) error {
	switch {
	case errors.Is(err, ErrClosed):
		return err
	case ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded):
		return ctx.Err()
	case ctx.Err() == nil && !req.sendBy.IsZero():
		return fmt.Errorf("%w: %s %q was not sent: the safe part of the lease (lockTTL minus lockMargin) ended before a connection to %s and send quota were there for it; nothing was written", ErrLeaseExpired, req.args[0], req.args[1], r.conn.URL().Redacted())
	}
	return fmt.Errorf("%w: %s %q was not sent: broker %s not reachable: %w", ErrRequestFailed, req.args[0], req.args[1], r.conn.URL().Redacted(), err)
}

// decode checks the status and content type and decodes the payload
// (docs/state-store-protocol.md#mqtt-properties, #responses).
func (r *rpc) decode(p *paho.Publish) (reply, error) {
	st := p.Properties.User.Get(propStatus)
	if st != statusOK {
		msg := p.Properties.User.Get(propStatusMsg)
		if st == "" {
			return reply{}, fmt.Errorf("%w: response has no %s property", ErrUnexpectedResponse, propStatus)
		}
		return reply{}, fmt.Errorf("%w: status %s: %s", ErrStoreError, st, msg)
	}
	if ct := p.Properties.ContentType; ct != "" && ct != contentType {
		return reply{}, fmt.Errorf("%w: content type %q, want %q", ErrUnexpectedResponse, ct, contentType)
	}
	v, err := resp3.DecodeResponse(p.Payload)
	if err != nil {
		return reply{}, fmt.Errorf("%w: %w", ErrUnexpectedResponse, err)
	}
	rep := reply{value: v, version: p.Properties.User.Get(propTimestamp)}
	if rep.version != "" {
		ts, err := hlc.Parse(rep.version)
		if err != nil {
			return reply{}, fmt.Errorf("%w: %s: %w", ErrUnexpectedResponse, propTimestamp, err)
		}
		// docs/state-store-protocol.md#mapping-dapr-state-operations: every client advances its HLC with
		// each version it receives
		r.clock.Observe(ts)
	}
	return rep, nil
}
