package broker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// conn is one client network connection. The reader goroutine (serve) owns the read side; the
// writer goroutine owns the write side.
type conn struct {
	b      *Broker
	id     ConnID // unique per connection; ConnectionOf(ctx) returns it
	nc     net.Conn
	br     *bufio.Reader
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc

	wmu     sync.Mutex // guards wq, qos0, closing, discCode
	wq      []*packets.ControlPacket
	qos0    int
	closing bool
	disc    *byte // DISCONNECT reason to send before closing, nil for none
	wake    chan struct{}
	wdone   chan struct{}
	// inFinished is signalled (without blocking) when a 3.1.1 client's publish finishes: the
	// reader may be waiting for a place below Receive Maximum (waitUnfinished).
	inFinished chan struct{}

	// v3: the connection speaks MQTT 3.1.1, read and written through v3.go's translation. Set
	// once by the reader under wmu before it queues anything (readFirst); the writer reads it
	// under wmu, everyone else after CONNECT.
	v3 bool

	// Set once CONNECT succeeded; then read under b.mu or by the reader.
	clientID  string
	username  string
	authState any
	authMeth  string
	recvMax   uint16 // the client's Receive Maximum [MQTT-3.3.4-7]
	maxPacket uint32 // the client's Maximum Packet Size, 0 for none
	keepAlive time.Duration
	aliases   topicAliases // topic alias tables (alias.go)

	// Guarded by b.mu.
	sess         *session
	inPids       map[uint16]bool // QoS 1/2 publishes received and not yet acknowledged (Receive Maximum)
	inUnfinished int             // QoS 1/2 publishes whose processing has not finished (see waitUnfinished)
	cleanDisc    bool            // DISCONNECT 0x00 received: no will
	reauthState  any
	reauthActive bool

	authMu     sync.Mutex  // guards authExpiry and authTimer
	authExpiry time.Time   // when the credentials expire (AuthResponse.Expiry), zero for never
	authTimer  *time.Timer // ends the connection at authExpiry
}

func newConn(b *Broker, nc net.Conn) *conn {
	id := ConnID(b.connSeq.Add(1))
	ctx, cancel := context.WithCancel(withConnID(context.Background(), id))
	return &conn{
		b: b, id: id, nc: nc, br: bufio.NewReaderSize(nc, 4096), ctx: ctx, cancel: cancel,
		log:  b.log.With("remote", nc.RemoteAddr().String()),
		wake: make(chan struct{}, 1), wdone: make(chan struct{}),
		inPids: map[uint16]bool{}, inFinished: make(chan struct{}, 1), recvMax: 65535,
	}
}

// enqueue adds packets to the write queue; it reports false when the connection is closing. A
// client that stops reading while it keeps sending (e.g. PINGREQ) cannot grow the queue without
// bound: beyond writeQueueLimit the connection is closed.
func (c *conn) enqueue(cps ...*packets.ControlPacket) bool {
	c.wmu.Lock()
	if c.closing {
		c.wmu.Unlock()
		return false
	}
	if len(c.wq)+len(cps) > c.writeQueueLimit() {
		c.closing = true
		c.wmu.Unlock()
		c.b.stats.refuse(CodeQuotaExceeded)
		c.log.Warn("closing connection: client does not read its packets")
		c.nc.Close()
		return false
	}
	c.wq = append(c.wq, cps...)
	c.wmu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return true
}

// writeQueueLimit bounds the packets waiting for the writer: every in-flight message the client
// allows, every acknowledgement it may be owed, the QoS 0 buffer, and slack for control packets.
func (c *conn) writeQueueLimit() int {
	return int(c.recvMax) + int(c.b.opts.ReceiveMaximum) + c.b.opts.MaxQoS0Buffered + 1024
}

func (c *conn) sendAll(cps []*packets.ControlPacket) { c.enqueue(cps...) }

// sendQoS0 queues a QoS 0 publish unless MaxQoS0Buffered are already waiting (then it is dropped,
// which QoS 0 permits, and false is returned).
func (c *conn) sendQoS0(p *packets.Publish) bool { return c.sendQoS0Packet(p.ToControlPacket()) }

// sendQoS0Packet is sendQoS0 for a PUBLISH already in its ControlPacket (publishPacket).
func (c *conn) sendQoS0Packet(cp *packets.ControlPacket) bool {
	if !c.fitsPacket(cp) {
		return true // discarded as if delivered [MQTT-3.1.2-25]
	}
	c.wmu.Lock()
	if c.closing || c.qos0 >= c.b.opts.MaxQoS0Buffered {
		c.wmu.Unlock()
		return false
	}
	c.qos0++
	c.wq = append(c.wq, cp)
	c.wmu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return true
}

func (c *conn) fits(e *entry, now time.Time) bool {
	if c.maxPacket == 0 {
		return true
	}
	return c.fitsPacket(e.publishPacket(now, false))
}

// fitsPacket reports whether cp is within the client's Maximum Packet Size, counted with the
// topic name (a topic alias the writer may put in its place only makes it smaller).
func (c *conn) fitsPacket(cp *packets.ControlPacket) bool {
	return c.maxPacket == 0 || uint32(wireSize(cp)) <= c.maxPacket
}

// closeWith closes the connection after sending what is queued and, if code is not nil, a DISCONNECT
// with that reason. It is safe to call many times and from any goroutine.
func (c *conn) closeWith(code *byte) {
	c.wmu.Lock()
	if !c.closing {
		c.closing = true
		c.disc = code
		// A client that stopped reading cannot hold the writer (and Close) for long.
		_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	}
	c.wmu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func codePtr(b byte) *byte { return &b }

// writer sends queued packets until the connection closes.
func (c *conn) writer() {
	defer close(c.wdone)
	bw := bufio.NewWriterSize(c.nc, 16<<10)
	var v3buf bytes.Buffer // 3.1.1 encoding scratch
	var batch []*packets.ControlPacket
	for {
		c.wmu.Lock()
		batch, c.wq = c.wq, batch[:0]
		c.qos0 = 0
		closing, disc, v3 := c.closing, c.disc, c.v3
		c.wmu.Unlock()
		for _, cp := range batch {
			var err error
			if v3 {
				err = writeV3(bw, &v3buf, cp)
			} else {
				c.aliasOutgoing(cp)
				_, err = cp.WriteTo(bw)
			}
			if err != nil {
				c.nc.Close()
				return
			}
		}
		clear(batch)
		if len(batch) > 0 {
			if err := bw.Flush(); err != nil {
				c.nc.Close()
				return
			}
		}
		if closing {
			c.wmu.Lock()
			more := len(c.wq) > 0
			c.wmu.Unlock()
			if more {
				continue
			}
			if disc != nil && !v3 { // 3.1.1 has no DISCONNECT from the server: closing is the answer
				d := packets.NewControlPacket(packets.DISCONNECT)
				d.Content.(*packets.Disconnect).ReasonCode = *disc
				_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
				_, _ = d.WriteTo(bw)
				_ = bw.Flush()
			}
			c.nc.Close()
			return
		}
		<-c.wake
	}
}

// serve runs the connection: CONNECT, then packets until the connection ends.
func (c *conn) serve() {
	defer c.cancel()
	go c.writer()
	defer func() { <-c.wdone }()
	defer c.closeWith(nil)

	_ = c.nc.SetReadDeadline(time.Now().Add(c.b.opts.ConnectTimeout))
	cp, err := c.readFirst()
	if errors.Is(err, errV3Refused) {
		c.log.Info("connection refused", "err", err.Error())
		c.connack(CodeUnsupportedProtocolVersion, false, nil) // 3.1.1 return code 0x01 [MQTT-3.1.2-2]
		return
	}
	if err != nil {
		c.readFailed(err, true)
		return
	}
	if cp.Type != packets.CONNECT {
		c.b.stats.refuse(CodeProtocolError)
		c.nc.Close() // the first packet must be CONNECT [MQTT-3.1.0-1]
		return
	}
	defer c.setAuthExpiry(time.Time{}) // armed by a successful authentication
	if !c.connect(cp.Content.(*packets.Connect)) {
		return
	}
	defer c.b.stats.connected(c, -1)
	defer c.b.detach(c)
	for {
		if c.keepAlive > 0 {
			_ = c.nc.SetReadDeadline(time.Now().Add(c.keepAlive * 3 / 2)) // [MQTT-3.1.2-22]
		} else {
			_ = c.nc.SetReadDeadline(time.Time{})
		}
		cp, err := c.read()
		if err != nil {
			c.readFailed(err, false)
			return
		}
		c.b.stats.PacketsIn.Add(1)
		if err := c.handle(cp); err != nil {
			if errors.Is(err, errClientDisconnect) || errors.Is(err, errConnEnded) {
				return
			}
			code := codeOf(err, CodeProtocolError)
			c.b.stats.refuse(code)
			c.log.Info("closing connection", "client", c.clientID, "reason", err.Error())
			c.closeWith(codePtr(code))
			return
		}
	}
}

// setAuthExpiry arms the end of the connection at t, when its credentials expire, in place of any
// earlier time; a zero t disarms it.
func (c *conn) setAuthExpiry(t time.Time) {
	c.authMu.Lock()
	defer c.authMu.Unlock()
	c.authExpiry = t
	if c.authTimer != nil {
		c.authTimer.Stop()
		c.authTimer = nil
	}
	if !t.IsZero() {
		c.authTimer = time.AfterFunc(time.Until(t), func() { c.authExpired(t) })
	}
}

// authExpired ends the connection whose credentials expired at t, unless a re-authentication
// replaced t meanwhile. MQTT v5 §3.14.2.1: 0xA0 Maximum connect time.
func (c *conn) authExpired(t time.Time) {
	c.authMu.Lock()
	current := c.authExpiry.Equal(t)
	c.authMu.Unlock()
	if !current {
		return
	}
	c.b.stats.refuse(CodeMaximumConnectTime)
	c.log.Info("closing connection: its credentials expired without re-authentication", "expired", t.UTC().Format(time.RFC3339))
	c.closeWith(codePtr(CodeMaximumConnectTime))
}

// readFailed closes the connection with the reason the read error calls for.
func (c *conn) readFailed(err error, beforeConnect bool) {
	var ne net.Error
	switch {
	case errors.Is(err, ErrPacketTooLarge):
		c.b.stats.refuse(CodePacketTooLarge)
		c.log.Info("packet too large", "err", err.Error())
		c.closeWith(codePtr(CodePacketTooLarge)) // [MQTT-3.1.2-24]
	case errors.Is(err, ErrMalformed):
		c.b.stats.refuse(CodeMalformedPacket)
		c.log.Info("malformed packet", "err", err.Error())
		if beforeConnect {
			c.nc.Close()
			return
		}
		c.closeWith(codePtr(CodeMalformedPacket)) // [MQTT-4.13.1-1]
	case errors.As(err, &ne) && ne.Timeout():
		if beforeConnect {
			c.b.stats.refuse(CodeMaximumConnectTime)
			c.nc.Close()
			return
		}
		c.b.stats.refuse(CodeKeepAliveTimeout)
		c.closeWith(codePtr(CodeKeepAliveTimeout))
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		c.closeWith(nil)
	default:
		c.closeWith(nil)
	}
}

// waitUnfinished waits, with b.mu held on entry and on return, until ok holds; ok is checked under
// b.mu after each publish that finishes. It reports false when the connection ends meanwhile (the
// writer has stopped: closeWith or a failed write), so that the reader stops too.
func (c *conn) waitUnfinished(ok func() bool) bool {
	for !ok() {
		c.b.mu.Unlock()
		select {
		case <-c.inFinished:
		case <-c.wdone:
			c.b.mu.Lock()
			return false
		}
		c.b.mu.Lock()
	}
	return true
}
