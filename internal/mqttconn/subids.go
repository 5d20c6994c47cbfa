package mqttconn

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"golang.org/x/net/proxy"
)

// Received is a PUBLISH as it arrived, with every subscription identifier it carried.
type Received struct {
	paho.PublishReceived
	// SubscriptionIDs are the Subscription Identifiers of the PUBLISH in wire order. A broker sends
	// one copy carrying the identifiers of every matching subscription of the session, or one copy
	// per subscription [MQTT-3.3.4-3], [MQTT-3.3.4-4]; paho's decoder keeps only the last identifier,
	// so they are read off the wire here. Nil when the PUBLISH carried none.
	SubscriptionIDs []int
}

// subIDTap decodes, from the bytes paho reads off the connection, the subscription identifiers
// of each PUBLISH, for OnPublish to pick up by packet id (QoS 1 and 2) or in order (QoS 0). paho
// reads one packet at a time (packets.ReadPacket reads exactly the packet's bytes) but hands
// PUBLISHes to its router on another goroutine, so the tap can be a few packets ahead.
type subIDTap struct {
	mu    sync.Mutex // guards everything below
	byPID map[uint16][]int
	qos0  []qos0Entry

	state    int
	first    byte // fixed header byte of the packet being read
	remLen   int  // remaining length being decoded, then the bytes of the packet still unread
	remShift uint
	head     []byte // the start of a PUBLISH, up to the end of its properties
}

type qos0Entry struct {
	ids   []int
	known bool
}

const (
	tapHeader = iota
	tapLength
	tapPublish // collecting a PUBLISH's variable header
	tapSkip    // skipping the rest of a packet
)

func newSubIDTap() *subIDTap { return &subIDTap{byPID: map[uint16][]int{}} }

// take returns the identifiers recorded for pub; ok is false when the tap has no record of it.
func (t *subIDTap) take(pub *paho.Publish) (ids []int, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if pub.QoS > 0 {
		ids, ok = t.byPID[pub.PacketID]
		delete(t.byPID, pub.PacketID)
		return ids, ok
	}
	if len(t.qos0) == 0 {
		return nil, false
	}
	e := t.qos0[0]
	t.qos0 = t.qos0[1:]
	return e.ids, e.known
}

// feed consumes bytes read from the server, in order.
func (t *subIDTap) feed(b []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(b) > 0 {
		switch t.state {
		case tapHeader:
			t.first, b = b[0], b[1:]
			t.remLen, t.remShift, t.state = 0, 0, tapLength
		case tapLength:
			c := b[0]
			b = b[1:]
			t.remLen |= int(c&0x7f) << t.remShift
			t.remShift += 7
			if c&0x80 != 0 {
				if t.remShift > 21 { // more than 4 bytes: malformed; paho drops the connection
					t.state = tapHeader
				}
				continue
			}
			switch {
			case t.first>>4 == packets.PUBLISH:
				t.head, t.state = t.head[:0], tapPublish
				if t.remLen == 0 {
					t.publishDone(nil, false)
				}
			case t.remLen == 0:
				t.state = tapHeader
			default:
				t.state = tapSkip
			}
		case tapPublish:
			// Copy only the variable header, never the payload.
			need, ids, done := parsePublishHead(t.first, t.head)
			for !done && len(b) > 0 && t.remLen > 0 {
				n := min(need-len(t.head), len(b), t.remLen)
				t.head = append(t.head, b[:n]...)
				b, t.remLen = b[n:], t.remLen-n
				need, ids, done = parsePublishHead(t.first, t.head)
			}
			switch {
			case done:
				t.publishDone(ids, true)
			case t.remLen == 0: // the packet ended before its properties: malformed
				t.publishDone(nil, false)
			}
		case tapSkip:
			n := min(len(b), t.remLen)
			b, t.remLen = b[n:], t.remLen-n
			if t.remLen == 0 {
				t.state = tapHeader
			}
		}
	}
}

// publishDone records the identifiers of the PUBLISH just read (known false: they could not be
// decoded) and makes the tap ready for the next packet.
func (t *subIDTap) publishDone(ids []int, known bool) {
	qos := (t.first >> 1) & 3
	if qos == 0 {
		t.qos0 = append(t.qos0, qos0Entry{ids: ids, known: known})
	} else if known {
		pid := binary.BigEndian.Uint16(t.head[2+int(binary.BigEndian.Uint16(t.head)):])
		t.byPID[pid] = ids
	}
	t.head = t.head[:0]
	if t.remLen == 0 {
		t.state = tapHeader
	} else {
		t.state = tapSkip
	}
}

// parsePublishHead decodes the variable header of a PUBLISH [MQTT-3.3.2] from b, its first bytes.
// While b is too short, done is false and need is the length b must reach to get further.
func parsePublishHead(first byte, b []byte) (need int, ids []int, done bool) {
	if len(b) < 2 {
		return 2, nil, false
	}
	i := 2 + int(binary.BigEndian.Uint16(b)) // topic
	if (first>>1)&3 > 0 {
		i += 2 // packet identifier
	}
	if len(b) <= i {
		return i + 1, nil, false
	}
	plen, n, ok := readVarInt(b[i:])
	if !ok {
		return len(b) + 1, nil, false
	}
	i += n
	end := i + plen
	if len(b) < end {
		return end, nil, false
	}
	for p := i; p < end; {
		id := b[p]
		p++
		switch id {
		case 0x01: // Payload Format Indicator
			p++
		case 0x02: // Message Expiry Interval
			p += 4
		case 0x23: // Topic Alias
			p += 2
		case 0x03, 0x08, 0x09: // Content Type, Response Topic, Correlation Data
			if p+2 > end {
				return end, ids, true
			}
			p += 2 + int(binary.BigEndian.Uint16(b[p:]))
		case 0x26: // User Property: two strings
			for range 2 {
				if p+2 > end {
					return end, ids, true
				}
				p += 2 + int(binary.BigEndian.Uint16(b[p:]))
			}
		case 0x0B: // Subscription Identifier
			v, n, ok := readVarInt(b[p:end])
			if !ok {
				return end, ids, true
			}
			ids = append(ids, v)
			p += n
		default: // not a PUBLISH property: paho refuses the packet
			return end, ids, true
		}
	}
	return end, ids, true
}

// readVarInt decodes an MQTT Variable Byte Integer [MQTT-1.5.5]; ok is false when b ends first.
func readVarInt(b []byte) (v, n int, ok bool) {
	var shift uint
	for n < len(b) && n < 4 {
		c := b[n]
		n++
		v |= int(c&0x7f) << shift
		if c&0x80 == 0 {
			return v, n, true
		}
		shift += 7
	}
	return 0, 0, false
}

// tapConn passes every byte read through the tap.
type tapConn struct {
	net.Conn
	tap *subIDTap
}

func (c *tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.tap.feed(p[:n])
	}
	return n, err
}

// bufferedTCPConn is a TCP connection with buffered reads. paho's packets.ReadPacket reads a
// packet's fixed header a byte at a time (the type, then each byte of the remaining length), then
// the rest: three or more read system calls per packet on the bare connection, one or none through
// the buffer (packets that arrived together come out of one read). Every read goes through the one
// bufferedTCPConn (paho reads the CONNACK, then every later packet, from it), so no byte is left in
// the buffer for another reader. It embeds the *net.TCPConn itself, not a net.Conn, so paho's
// net.Buffers writes are still one writev system call each (net.Buffers.WriteTo finds the
// connection's unexported writeBuffers method), atomic without packets.NewThreadSafeConn's lock.
type bufferedTCPConn struct {
	*net.TCPConn
	br *bufio.Reader
}

// readBufferSize is the size of bufferedTCPConn's read buffer; bufio reads a larger request (a
// large PUBLISH's body) straight into the caller's slice.
const readBufferSize = 16 << 10

func newBufferedTCPConn(c *net.TCPConn) *bufferedTCPConn {
	return &bufferedTCPConn{TCPConn: c, br: bufio.NewReaderSize(c, readBufferSize)}
}

func (c *bufferedTCPConn) Read(p []byte) (int, error) { return c.br.Read(p) }

// WriteTo hides the *net.TCPConn's, which would read past the buffer.
func (c *bufferedTCPConn) WriteTo(w io.Writer) (int64, error) { return c.br.WriteTo(w) }

// dial opens the network connection of one attempt (what autopaho does for tcp and tls, with its
// all_proxy support) with the reads tapped; with a nil tap, untapped and, over plain TCP, buffered
// (bufferedTCPConn).
func dial(ctx context.Context, cfg autopaho.ClientConfig, u *url.URL, tap *subIDTap) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	var raw net.Conn
	var err error
	if os.Getenv("all_proxy") != "" {
		raw, err = proxy.Dial(ctx, "tcp", u.Host)
	} else {
		var d net.Dialer
		raw, err = d.DialContext(ctx, "tcp", u.Host)
	}
	if err != nil {
		return nil, err
	}
	// paho writes a packet as net.Buffers from several goroutines: only a *net.TCPConn writes those
	// in one system call; through a wrapper they are several writes, so the lock that
	// packets.WriteTo takes from a sync.Locker is needed (without it, Mosquitto saw interleaved,
	// malformed packets). Untapped, the connection is a coalescingConn, a sync.Locker that also
	// writes the packets of concurrent senders in one system call (and whole over TLS, whose
	// tls.Conn would otherwise interleave them).
	switch strings.ToLower(u.Scheme) {
	case "mqtt", "tcp", "":
		if tap == nil {
			if tc, ok := raw.(*net.TCPConn); ok {
				return newCoalescingConn(newBufferedTCPConn(tc)), nil
			}
			return newCoalescingConn(raw), nil
		}
		return packets.NewThreadSafeConn(&tapConn{Conn: raw, tap: tap}), nil
	case "ssl", "tls", "mqtts", "mqtt+ssl", "tcps":
		tc := tls.Client(raw, cfg.TlsCfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = raw.Close()
			return nil, err
		}
		if tap == nil {
			return newCoalescingConn(tc), nil // tls.Conn reads whole records into its own buffer
		}
		return packets.NewThreadSafeConn(&tapConn{Conn: tc, tap: tap}), nil
	}
	_ = raw.Close()
	return nil, fmt.Errorf("unsupported scheme %q in %s", u.Scheme, u.Redacted())
}
