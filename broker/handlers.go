package broker

import (
	"context"
	"errors"
	"time"
	"unicode/utf8"

	"github.com/eclipse/paho.golang/packets"
)

// handle processes one packet after CONNECT. An error closes the connection with its reason code.
func (c *conn) handle(cp *packets.ControlPacket) error {
	switch p := cp.Content.(type) {
	case *packets.Publish:
		return c.handlePublish(p)
	case *packets.Puback:
		c.b.outboundAck(c, p.PacketID, packets.PUBACK, p.ReasonCode)
	case *packets.Pubrec:
		c.b.outboundAck(c, p.PacketID, packets.PUBREC, p.ReasonCode)
	case *packets.Pubcomp:
		c.b.outboundAck(c, p.PacketID, packets.PUBCOMP, p.ReasonCode)
	case *packets.Pubrel:
		c.handlePubrel(p)
	case *packets.Subscribe:
		return c.handleSubscribe(p)
	case *packets.Unsubscribe:
		return c.handleUnsubscribe(p)
	case *packets.Pingreq:
		c.enqueue(packets.NewControlPacket(packets.PINGRESP)) // [MQTT-3.12.4-1]
	case *packets.Disconnect:
		return c.handleDisconnect(p)
	case *packets.Auth:
		return c.handleAuth(p)
	case *packets.Connect:
		return reasonf(CodeProtocolError, "second CONNECT") // [MQTT-3.1.0-2]
	default:
		return reasonf(CodeProtocolError, "unexpected packet %s", cp.PacketType())
	}
	return nil
}

func (c *conn) client() Client {
	return Client{ID: c.clientID, Username: c.username, AuthState: c.authState}
}

// ack answers a QoS 1/2 PUBLISH with PUBACK or PUBREC.
func (c *conn) ack(qos byte, pid uint16, code byte) {
	if c.v3 && code >= 0x80 {
		if !c.v3Refuse(code) {
			return
		}
		code = CodeSuccess
	}
	t := packets.PUBACK
	if qos == 2 {
		t = packets.PUBREC
	}
	cp := packets.NewControlPacket(t)
	switch a := cp.Content.(type) {
	case *packets.Puback:
		a.PacketID, a.ReasonCode = pid, code
	case *packets.Pubrec:
		a.PacketID, a.ReasonCode = pid, code
	}
	c.enqueue(cp)
}

func (c *conn) handlePublish(p *packets.Publish) error {
	b := c.b
	if err := c.resolveAlias(p); err != nil {
		return err
	}
	if p.Properties != nil && p.Properties.SubscriptionIdentifier != nil {
		return reasonf(CodeProtocolError, "PUBLISH from a client carries a subscription identifier") // [MQTT-3.3.4-6]
	}
	if !validUTF8(p.Topic) {
		return reasonf(CodeMalformedPacket, "topic is not valid UTF-8") // [MQTT-1.5.4-1]
	}
	if !validTopicName(p.Topic) {
		return reasonf(CodeTopicNameInvalid, "invalid topic name") // [MQTT-3.3.2-2]
	}
	if p.QoS > 0 && p.PacketID == 0 {
		return reasonf(CodeProtocolError, "packet identifier 0") // [MQTT-2.2.1-3]
	}
	if p.QoS > 0 {
		b.mu.Lock()
		s := c.sess
		if s == nil {
			b.mu.Unlock()
			return nil
		}
		if p.QoS == 2 && s.inbound[p.PacketID] {
			// Duplicate: acknowledge, do not route again [MQTT-4.3.3-10]; the PUBREC follows the commit
			// of the first copy, which may still be pending.
			// If that commit failed, the first copy was refused and its id released: so is this one.
			pid := p.PacketID
			b.store.submit(nil, func(err error) {
				b.mu.Lock()
				code := CodeSuccess
				if err != nil || !s.inbound[pid] {
					code = CodeUnspecifiedError
				}
				b.mu.Unlock()
				c.ack(2, pid, code)
			})
			b.mu.Unlock()
			return nil
		}
		if c.inPids[p.PacketID] {
			b.mu.Unlock()
			return nil // a retransmission of one being processed: its acknowledgement follows
		}
		limit := int(b.opts.ReceiveMaximum)
		if p.Duplicate {
			// Retransmissions after a reconnect get slack (paho.golang v0.23.0 can resend more than
			// Receive Maximum after a restart); a client still flooding beyond it is disconnected.
			limit *= 2
		}
		if c.v3 && len(c.inPids) >= limit && c.inUnfinished > 0 {
			// 3.1.1 cannot tell the client the limit (its CONNACK has no properties): hold the
			// reader, and so the client through TCP flow control, until a publish in progress
			// finishes. Only those in progress free a place without reading: QoS 2 ones waiting
			// for their PUBREL need the reader, and past them the limit closes as for v5.
			if !c.waitUnfinished(func() bool { return len(c.inPids) < limit || c.inUnfinished == 0 }) {
				b.mu.Unlock()
				return errConnEnded
			}
		}
		if len(c.inPids) >= limit {
			b.mu.Unlock()
			return reasonf(CodeReceiveMaximumExceeded, "more than %d unacknowledged publishes", b.opts.ReceiveMaximum) // [MQTT-3.3.4-9]
		}
		c.inPids[p.PacketID] = true
		c.inUnfinished++
		b.mu.Unlock()
	}
	var marked *session // the session pre recorded the QoS 2 packet id in; guarded by b.mu
	done := func(code byte) {
		if p.QoS == 0 {
			return
		}
		b.mu.Lock()
		c.inUnfinished--
		if c.v3 {
			select {
			case c.inFinished <- struct{}{}:
			default:
			}
		}
		if p.QoS == 1 || code >= 0x80 {
			delete(c.inPids, p.PacketID)
		}
		if s := marked; s != nil && code >= 0x80 && s.inbound[p.PacketID] {
			// A refused QoS 2 PUBLISH ends its flow: the id is free for the publisher's next message,
			// which must not be taken for a duplicate of this one [MQTT-4.3.3-9].
			delete(s.inbound, p.PacketID)
			if s.persistent {
				b.store.submit([]op{{kind: opDelInbound, owner: s.id, seq: uint64(p.PacketID)}}, nil)
			}
		}
		b.mu.Unlock()
		if code >= 0x80 && code != CodeQuotaExceeded { // quota refusals are counted by route
			b.stats.refuse(code)
		}
		c.ack(p.QoS, p.PacketID, code)
	}
	if az := b.opts.Authorizer; az != nil {
		if err := az.AuthorizePublish(c.ctx, c.client(), p.Topic); err != nil {
			done(codeOf(err, CodeNotAuthorized)) // [MQTT-3.3.5-2]
			return nil
		}
	}
	if p.Properties != nil && p.Properties.PayloadFormat != nil && *p.Properties.PayloadFormat == 1 && !utf8.Valid(p.Payload) {
		done(CodePayloadFormatInvalid) // [MQTT-3.3.2-4] may be refused
		return nil
	}
	m := messageFromPublish(p, c.clientID, time.Now())
	var pre func(*[]op)
	if p.QoS == 2 {
		pre = func(ops *[]op) { // caller holds b.mu
			if s := c.sess; s != nil {
				s.inbound[p.PacketID] = true // [MQTT-4.3.3-10]
				marked = s
				if s.persistent {
					*ops = append(*ops, op{kind: opPutInbound, owner: s.id, seq: uint64(p.PacketID)})
				}
			}
		}
	}
	for _, svc := range b.opts.Services {
		if svc.Match(m.Topic) {
			if az := b.opts.Authorizer; az != nil && m.ResponseTopic != "" {
				// The service answers on the Response Topic on the publisher's behalf: the publisher
				// needs the right to publish there, or a request would reach another tenant's topics.
				if err := az.AuthorizePublish(c.ctx, c.client(), m.ResponseTopic); err != nil {
					done(codeOf(err, CodeNotAuthorized))
					return nil
				}
			}
			b.stats.in(m.QoS)
			hctx := context.WithValue(c.ctx, clientKey{}, c.client())
			// finish acknowledges the PUBLISH once the service has handled it.
			finish := func(err error) {
				if err != nil {
					done(codeOf(err, CodeUnspecifiedError))
					return
				}
				if pre == nil {
					done(CodeSuccess)
					return
				}
				var ops []op
				b.mu.Lock()
				pre(&ops)
				b.store.submit(ops, func(err error) {
					if err != nil {
						b.log.Error("store commit failed", "err", err)
						done(CodeUnspecifiedError) // the packet id is not durable: no PUBREC 0x00
						return
					}
					done(CodeSuccess)
				})
				b.mu.Unlock()
			}
			var err error
			if as, ok := svc.(AsyncService); ok {
				err = as.HandleAsync(hctx, c.clientID, m, b, finish)
			} else if err = svc.Handle(hctx, c.clientID, m, b); err == nil {
				finish(nil)
			}
			if err != nil {
				var de *DisconnectError
				if errors.As(err, &de) {
					return &de.ReasonError
				}
				finish(err)
			}
			return nil
		}
	}
	b.publish(m, pre, func(n int, err error) {
		switch {
		case errors.Is(err, ErrQuotaExceeded):
			done(CodeQuotaExceeded)
		case err != nil:
			done(CodeUnspecifiedError)
		case n == 0:
			done(CodeNoMatchingSubscribers)
		default:
			done(CodeSuccess)
		}
	})
	return nil
}

// handlePubrel completes an inbound QoS 2 flow [MQTT-4.3.3-11].
func (c *conn) handlePubrel(p *packets.Pubrel) {
	b := c.b
	var ops []op
	b.mu.Lock()
	s := c.sess
	code := CodePacketIDNotFound
	if s != nil && s.inbound[p.PacketID] {
		code = CodeSuccess
		delete(s.inbound, p.PacketID)
		if s.persistent {
			ops = append(ops, op{kind: opDelInbound, owner: s.id, seq: uint64(p.PacketID)})
		}
	}
	delete(c.inPids, p.PacketID)
	send := func(error) {
		cp := packets.NewControlPacket(packets.PUBCOMP)
		cp.Content.(*packets.Pubcomp).PacketID = p.PacketID
		cp.Content.(*packets.Pubcomp).ReasonCode = code
		c.enqueue(cp)
	}
	if len(ops) > 0 {
		// PUBCOMP only once the id is durably released. If that commit fails, the id is still
		// stored: after a restart the publisher's next QoS 2 message with it would be taken for a
		// duplicate and never routed. So the id stays taken, no PUBCOMP goes out, and the connection
		// ends: the client sends the PUBREL again when it reconnects [MQTT-4.4.0-1], and the release
		// is tried again.
		b.store.submit(ops, func(err error) {
			if err == nil {
				send(nil)
				return
			}
			b.log.Error("store commit failed: QoS 2 packet id not released; disconnecting", "err", err, "packet_id", p.PacketID)
			b.mu.Lock()
			if c.sess == s {
				s.inbound[p.PacketID] = true
			}
			b.mu.Unlock()
			b.stats.refuse(CodeUnspecifiedError)
			c.closeWith(codePtr(CodeUnspecifiedError))
		})
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()
	send(nil)
}

// outboundAck handles PUBACK, PUBREC and PUBCOMP for messages the broker sent [MQTT-4.3.2-4]
// [MQTT-4.3.3-6].
func (b *Broker) outboundAck(c *conn, pid uint16, typ byte, code byte) {
	var ops []op
	b.mu.Lock()
	defer b.mu.Unlock()
	s := c.sess
	if s == nil {
		return
	}
	e := s.pids[pid]
	if e == nil {
		return
	}
	done := false
	switch {
	case typ == packets.PUBACK && e.qos == 1 && e.state == stSent:
		done = true
	case typ == packets.PUBREC && e.qos == 2 && e.state == stSent && code >= 0x80:
		done = true
	case typ == packets.PUBREC && e.qos == 2 && e.state != stQueued:
		e.resend = false // the PUBREL below is its resend
		if e.state == stSent {
			e.state = stPubrelSent
			if s.persistent {
				ops = append(ops, op{kind: opPutEntry, owner: s.ownerKey(), seq: e.seq, val: e.encode()})
			}
		}
		cp := packets.NewControlPacket(packets.PUBREL)
		cp.Content.(*packets.Pubrel).PacketID = pid
		c.enqueue(cp)
	case typ == packets.PUBCOMP && e.state == stPubrelSent:
		done = true
	}
	if done {
		s.removeInflight(e)
		b.forget(s, e, &ops)
		b.pump(s, time.Now(), &ops)
	}
	if len(ops) > 0 {
		// The subscriber's acknowledgement rides along with the next commit: lost in a crash, it
		// only makes the message be sent again (at least once; a QoS 2 receiver drops the copy).
		b.store.submitLazy(ops)
	}
}

func (c *conn) handleDisconnect(p *packets.Disconnect) error {
	b := c.b
	b.mu.Lock()
	if s := c.sess; s != nil {
		if p.Properties != nil && p.Properties.SessionExpiryInterval != nil {
			v := *p.Properties.SessionExpiryInterval
			if s.expiry == 0 && v != 0 {
				b.mu.Unlock()
				return reasonf(CodeProtocolError, "session expiry set on DISCONNECT after 0 on CONNECT") // [MQTT-3.14.2-2]
			}
			s.expiry = min(v, b.opts.MaxSessionExpiry)
		}
		c.cleanDisc = p.ReasonCode != CodeDisconnectWithWill // [MQTT-3.14.4-3]
	}
	b.mu.Unlock()
	c.closeWith(nil)
	return errClientDisconnect
}

// handleAuth runs re-authentication on an open connection [MQTT-4.12.1-1].
func (c *conn) handleAuth(p *packets.Auth) error {
	auth := c.b.opts.Authenticator
	if auth == nil || c.authMeth == "" || p.Properties.AuthMethod != c.authMeth {
		return reasonf(CodeProtocolError, "AUTH with a method other than the CONNECT's") // [MQTT-4.12.1-1]
	}
	switch {
	case p.ReasonCode == CodeReAuthenticate:
		c.reauthState = c.authState
	case p.ReasonCode == CodeContinueAuthentication && c.reauthActive:
	default:
		return reasonf(CodeProtocolError, "unexpected AUTH reason 0x%02x", p.ReasonCode)
	}
	req := &AuthRequest{
		ClientID: c.clientID, Username: c.username, Method: c.authMeth, Data: p.Properties.AuthData,
		Reauth: true, RemoteAddr: c.nc.RemoteAddr(), State: c.reauthState,
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.b.opts.ConnectTimeout)
	resp, err := auth.Authenticate(ctx, req)
	cancel()
	if err != nil {
		return reasonf(codeOf(err, CodeNotAuthorized), "re-authentication refused: %v", err) // [MQTT-4.12.1-2]
	}
	if resp.Continue {
		c.reauthActive, c.reauthState = true, resp.State
		c.sendAuth(CodeContinueAuthentication, c.authMeth, resp.Data)
		return nil
	}
	if resp.Identity != "" && resp.Identity != c.username {
		return reasonf(CodeNotAuthorized, "re-authentication as %q on a connection authenticated as %q", resp.Identity, c.username)
	}
	if !resp.Expiry.IsZero() && !resp.Expiry.After(time.Now()) {
		return reasonf(CodeNotAuthorized, "re-authentication with expired credentials")
	}
	c.reauthActive, c.authState = false, resp.State
	c.setAuthExpiry(resp.Expiry)
	c.sendAuth(CodeSuccess, c.authMeth, resp.Data)
	return nil
}
