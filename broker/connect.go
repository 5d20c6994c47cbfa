package broker

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// connack sends a CONNACK; a code >= 0x80 also closes the connection [MQTT-3.2.2-7].
func (c *conn) connack(code byte, present bool, props *packets.Properties) {
	if props == nil {
		props = &packets.Properties{}
	}
	cp := packets.NewControlPacket(packets.CONNACK)
	cp.Content = &packets.Connack{ReasonCode: code, SessionPresent: present, Properties: props}
	c.enqueue(cp)
	if code >= 0x80 {
		c.b.stats.refuse(code)
		c.closeWith(nil)
	}
}

// connect handles CONNECT: checks, authentication, session takeover or creation, CONNACK, and the
// resend of in-flight messages. It reports whether the connection is established.
func (c *conn) connect(p *packets.Connect) bool {
	b := c.b
	if c.v3 {
		if code := c.v3Connect(p); code != CodeSuccess {
			c.connack(code, false, nil)
			return false
		}
	} else if p.ProtocolName != "MQTT" || p.ProtocolVersion != 5 {
		c.connack(CodeUnsupportedProtocolVersion, false, nil) // [MQTT-3.1.2-2]
		return false
	}
	if p.WillQOS > 2 || (!p.WillFlag && (p.WillQOS != 0 || p.WillRetain)) {
		c.connack(CodeMalformedPacket, false, nil) // [MQTT-3.1.2-11] [MQTT-3.1.2-12] [MQTT-3.1.2-13]
		return false
	}
	pr := p.Properties
	if (pr.ReceiveMaximum != nil && *pr.ReceiveMaximum == 0) || (pr.MaximumPacketSize != nil && *pr.MaximumPacketSize == 0) {
		c.connack(CodeProtocolError, false, nil) // [MQTT-3.1.2-?] zero is a protocol error
		return false
	}
	if !validUTF8(p.ClientID) || !validUTF8(p.Username) {
		c.connack(CodeClientIdentifierNotValid, false, nil) // [MQTT-3.1.3-4]
		return false
	}
	var w *will
	if p.WillFlag {
		if !validTopicName(p.WillTopic) {
			c.connack(CodeTopicNameInvalid, false, nil) // [MQTT-3.1.3-11]
			return false
		}
		wm := &Message{Topic: p.WillTopic, Payload: p.WillMessage, QoS: p.WillQOS, Retain: p.WillRetain}
		w = &will{msg: wm}
		if wp := p.WillProperties; wp != nil {
			if wp.WillDelayInterval != nil {
				w.delay = time.Duration(*wp.WillDelayInterval) * time.Second
			}
			if wp.PayloadFormat != nil {
				wm.PayloadFormat = *wp.PayloadFormat
			}
			if wp.MessageExpiry != nil {
				wm.Expiry = time.Duration(*wp.MessageExpiry) * time.Second
			}
			wm.ContentType, wm.ResponseTopic, wm.CorrelationData = wp.ContentType, wp.ResponseTopic, wp.CorrelationData
			for _, u := range wp.User {
				wm.UserProperties = append(wm.UserProperties, UserProperty{u.Key, u.Value})
			}
		}
	}
	ack := &packets.Properties{}
	clientID := p.ClientID
	if clientID == "" {
		var r [12]byte
		_, _ = rand.Read(r[:])
		clientID = "auto-" + hex.EncodeToString(r[:])
		ack.AssignedClientID = clientID // [MQTT-3.2.2-16]
	}
	c.clientID, c.username = clientID, p.Username
	c.log = c.log.With("client", clientID)
	if !c.authenticate(p, ack) {
		return false
	}
	if az := b.opts.Authorizer; az != nil && w != nil {
		// The will is published on the client's behalf: it needs the right to publish on its topic.
		// Refused rather than dropped, so the client never relies on a will that would not be sent.
		if err := az.AuthorizePublish(c.ctx, c.client(), w.msg.Topic); err != nil {
			c.log.Info("will topic not authorized", "err", err.Error())
			c.connack(codeOf(err, CodeNotAuthorized), false, nil) // MQTT v5 §3.2.2.2 0x87 Not authorized
			return false
		}
	}
	if w != nil {
		// A will on a topic a Service consumes would reach that Service from nobody (the client is
		// gone), or reach subscribers as if the broker had sent it (forged key notifications).
		for _, svc := range b.opts.Services {
			if svc.Match(w.msg.Topic) {
				c.log.Info("will topic is served by the broker itself", "topic", w.msg.Topic)
				c.connack(CodeNotAuthorized, false, nil)
				return false
			}
		}
	}
	if b.stats.Connections.Load() >= int64(b.opts.MaxConnections) {
		c.connack(CodeQuotaExceeded, false, nil)
		return false
	}
	if pr.ReceiveMaximum != nil {
		c.recvMax = *pr.ReceiveMaximum
	}
	if pr.MaximumPacketSize != nil {
		c.maxPacket = *pr.MaximumPacketSize
	}
	c.connectLimits(p, ack) // keep alive, topic aliases (alias.go)
	expiry := uint32(0)
	if pr.SessionExpiryInterval != nil {
		expiry = *pr.SessionExpiryInterval
	}
	if expiry > b.opts.MaxSessionExpiry {
		expiry = b.opts.MaxSessionExpiry
		ack.SessionExpiryInterval = &expiry // [MQTT-3.2.2-?] the server's value is announced
	}
	rm, mps, zero, one := b.opts.ReceiveMaximum, b.opts.MaxPacketSize, byte(0), byte(1)
	ack.ReceiveMaximum, ack.MaximumPacketSize = &rm, &mps
	ack.RetainAvailable, ack.WildcardSubAvailable, ack.SubIDAvailable, ack.SharedSubAvailable = &one, &one, &one, &one
	_ = zero

	now := time.Now()
	var ops []op
	var oldWill *Message
	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		c.connack(CodeServerUnavailable, false, nil)
		return false
	}
	s := b.sessions[clientID]
	owner := ""
	if b.opts.Authenticator != nil {
		owner = "u:" + c.username
	}
	if s != nil && owner != "" && s.owner != "" && s.owner != owner {
		// A client ID is no credential: another user's client may neither take the session over
		// (its subscriptions were granted to that user, its queue holds that user's messages) nor
		// end it with Clean Start. MQTT v5 §3.2.2.2 0x87 Not authorized (3.1.1: 0x05).
		b.mu.Unlock()
		c.log.Info("client ID refused: its session belongs to another user", "user", c.username)
		c.connack(CodeNotAuthorized, false, nil)
		return false
	}
	if s != nil && s.conn != nil {
		old := s.conn // session takeover [MQTT-3.1.4-3]
		old.closeWith(codePtr(CodeSessionTakenOver))
		old.cancel()
		oldWill = b.offline(s, old, now, &ops)
		s = b.sessions[clientID]
	}
	present := false
	if s != nil && p.CleanStart {
		if s.will != nil && !s.willAt.IsZero() && oldWill == nil {
			oldWill = s.will.msg // the old session ends: its pending will is due [MQTT-3.1.3-9]
		}
		b.endSession(s, &ops) // [MQTT-3.1.2-4]
		delete(b.sessions, clientID)
		s = nil
	}
	if s == nil && len(b.sessions) >= b.opts.MaxSessions {
		b.mu.Unlock()
		if len(ops) > 0 {
			b.store.submit(ops, nil)
		}
		c.connack(CodeQuotaExceeded, false, nil) // bounded memory: no new session
		return false
	}
	if s == nil {
		s = newSession(clientID)
		b.sessions[clientID] = s
	} else {
		present = true // [MQTT-3.2.2-3]
	}
	wasPersistent := s.persistent
	s.owner = owner
	s.will, s.willAt = w, time.Time{} // a reconnect cancels a delayed will [MQTT-3.1.3-9]
	s.expiry = expiry
	s.v3 = c.v3 // deliveries to it follow its protocol's rules (mergeOverlaps)
	s.persistent = expiry > 0 && !b.memory
	// Connected from here on, before the record below is written: a connected session has no
	// offline time, on disk either.
	s.conn, s.offlineAt = c, time.Time{}
	switch {
	case s.persistent:
		ops = append(ops, op{kind: opPutSession, owner: s.id, val: s.record()})
		if !wasPersistent {
			for _, e := range append(append([]*entry(nil), s.inflight...), s.queued[s.qhead:]...) {
				ops = append(ops, op{kind: opPutEntry, owner: s.ownerKey(), seq: e.seq, val: e.encode()})
				if e.groupKept {
					ops = append(ops, op{kind: opDelEntry, owner: e.group.key(), seq: e.seq})
					e.groupKept = false
				}
			}
		}
	case wasPersistent:
		ops = append(ops, op{kind: opDelSession, owner: s.id})
		// The session's entries go with its record; those that came through a shared
		// subscription are kept under their group until acknowledged, as route and pump do for
		// a non-persistent member, so a crash cannot lose them.
		for _, e := range append(append([]*entry(nil), s.inflight...), s.queued[s.qhead:]...) {
			if e.group != nil {
				ops = append(ops, op{kind: opPutEntry, owner: e.group.key(), seq: e.seq, val: e.encode()})
				e.groupKept = true
			}
		}
	}
	c.sess = s
	b.stats.connected(c, 1)
	c.connack(CodeSuccess, present, ack)
	// Unacknowledged PUBLISH (DUP) and PUBREL are resent in order by pump, within the new connection's
	// Receive Maximum (resendInflight).
	for _, e := range s.inflight {
		e.resend = true
	}
	s.resending = len(s.inflight) > 0
	b.pump(s, now, &ops)
	if len(ops) > 0 {
		b.store.submit(ops, nil)
	}
	b.mu.Unlock()
	if oldWill != nil {
		b.publish(oldWill, nil, func(int, error) {})
	}
	c.log.Debug("client connected", "session_present", present, "expiry", expiry)
	return true
}

// authenticate runs the Authenticator over CONNECT and any AUTH exchange [MQTT-4.12.0-1]. On success
// it fills the CONNACK authentication properties; on failure it answers CONNACK and returns false.
func (c *conn) authenticate(p *packets.Connect, ack *packets.Properties) bool {
	auth := c.b.opts.Authenticator
	method := p.Properties.AuthMethod
	if auth == nil {
		if method != "" {
			c.connack(CodeBadAuthenticationMethod, false, nil) // [MQTT-4.12.0-1]
			return false
		}
		return true
	}
	req := &AuthRequest{
		ClientID: c.clientID, Username: p.Username, Password: p.Password, HasPassword: p.PasswordFlag,
		Method: method, Data: p.Properties.AuthData, RemoteAddr: c.nc.RemoteAddr(),
	}
	if tc, ok := c.nc.(*tls.Conn); ok {
		st := tc.ConnectionState() // the handshake is done: CONNECT came through it
		req.TLS = &st
	}
	if !c.b.authLimit.allowed(req.RemoteAddr, time.Now()) {
		c.b.authLog.log(c.log, authRefusalsSummary,
			"connection refused: too many failed authentications from this address", "remote", addrKey(req.RemoteAddr))
		c.connack(CodeConnectionRateExceeded, false, nil)
		return false
	}
	for {
		ctx, cancel := context.WithTimeout(c.ctx, c.b.opts.ConnectTimeout)
		resp, err := auth.Authenticate(ctx, req)
		cancel()
		if err != nil {
			def := CodeNotAuthorized
			if method == "" && p.PasswordFlag {
				def = CodeBadUserNameOrPassword
			}
			c.b.authLimit.failed(req.RemoteAddr, time.Now())
			c.b.authLog.log(c.log, authRefusalsSummary, "authentication refused", "err", err.Error())
			c.connack(codeOf(err, def), false, nil)
			return false
		}
		if !resp.Continue {
			if !resp.Expiry.IsZero() && !resp.Expiry.After(time.Now()) {
				c.b.authLimit.failed(req.RemoteAddr, time.Now())
				c.b.authLog.log(c.log, authRefusalsSummary, "authentication refused: the credentials have expired")
				c.connack(CodeNotAuthorized, false, nil)
				return false
			}
			c.authState, c.authMeth = resp.State, method
			if resp.Identity != "" {
				c.username = resp.Identity
				c.log = c.log.With("identity", resp.Identity)
			}
			// After c.log is final: the timer's goroutine logs with it. Disarmed by serve when
			// the connection ends.
			c.setAuthExpiry(resp.Expiry)
			ack.AuthMethod, ack.AuthData = method, resp.Data
			return true
		}
		if method == "" {
			c.connack(CodeBadAuthenticationMethod, false, nil)
			return false
		}
		c.sendAuth(CodeContinueAuthentication, method, resp.Data) // [MQTT-4.12.0-2]
		_ = c.nc.SetReadDeadline(time.Now().Add(c.b.opts.ConnectTimeout))
		cp, err := c.read()
		if err != nil {
			c.readFailed(err, true)
			return false
		}
		a, ok := cp.Content.(*packets.Auth)
		if !ok || a.ReasonCode != CodeContinueAuthentication || a.Properties.AuthMethod != method {
			c.connack(CodeProtocolError, false, nil) // [MQTT-4.12.0-4]
			return false
		}
		req.Data, req.State = a.Properties.AuthData, resp.State
	}
}

func (c *conn) sendAuth(code byte, method string, data []byte) {
	cp := packets.NewControlPacket(packets.AUTH)
	cp.Content = &packets.Auth{ReasonCode: code, Properties: &packets.Properties{AuthMethod: method, AuthData: data}}
	c.enqueue(cp)
}
