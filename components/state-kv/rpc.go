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

// Protocol constants (spec §1.1, §1.2).
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
// (`clients/{clientId}/services/statestore/#`) apply (spec §1.1).
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
type rpc struct {
	conn      *mqttconn.Conn
	clientID  string
	respTopic string
	clock     *hlc.Clock
	timeout   time.Duration
	persist   bool

	mu      sync.Mutex                    // guards waiters
	waiters map[string]chan *paho.Publish // by correlation data
}

func newRPC(clientID string, timeout time.Duration, persist bool) (*rpc, error) {
	clock, err := hlc.NewClock(hlc.Options{NodeID: strings.ReplaceAll(clientID, ":", "_")})
	if err != nil {
		return nil, err
	}
	return &rpc{
		clientID: clientID, respTopic: responseTopicFor(clientID), clock: clock,
		timeout: timeout, persist: persist, waiters: map[string]chan *paho.Publish{},
	}, nil
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
}

// do sends req and waits for its response, at most timeout (or ctx). The response's __ts advances
// the local clock. Command errors (`-ERR`) are returned as a reply, not an error.
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
	if err := r.publish(ctx, msg); err != nil {
		return reply{}, err
	}
	select {
	case p := <-ch:
		return r.decode(p)
	case <-ctx.Done():
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return reply{}, ctx.Err() // the caller gave up
		}
		return reply{}, fmt.Errorf("%w: %s %q: the broker at %s acknowledged the request but sent no response in time (%w); does it offer the Azure IoT Operations state store? The component needs one (mqdapr's broker with its key-value service, or AIO's broker)",
			ErrNoResponse, req.args[0], req.args[1], r.conn.URL().Redacted(), ctx.Err())
	}
}

func (r *rpc) publish(ctx context.Context, msg *paho.Publish) error {
	cm := r.conn.Manager()
	for {
		if err := cm.AwaitConnection(ctx); err != nil {
			return fmt.Errorf("%w: broker %s not reachable: %w", ErrRequestFailed, r.conn.URL().Redacted(), err)
		}
		resp, err := cm.Publish(ctx, msg)
		if mqttconn.NotSent(err) && ctx.Err() == nil {
			continue // lost between the wait and the send: wait again
		}
		if resp != nil && resp.ReasonCode >= 0x80 {
			reason := mqttconn.ReasonString(resp.ReasonCode)
			if resp.Properties != nil && resp.Properties.ReasonString != "" {
				reason += " (" + resp.Properties.ReasonString + ")"
			}
			return fmt.Errorf("%w: the broker refused the request: %s", ErrRequestFailed, reason)
		}
		if err != nil {
			return fmt.Errorf("%w: %w", ErrRequestFailed, err)
		}
		return nil
	}
}

// decode checks the status and content type and decodes the payload (spec §1.2, §1.5).
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
		r.clock.Observe(ts) // spec §2: every client advances its HLC with each version it receives
	}
	return rep, nil
}
