package mqttconn

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
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
	// Ack acknowledges the message (QoS 1 and 2, with Options.ManualAcks; a no-op otherwise).
	Ack Ack
}

// subIDTap records, for OnPublish to pick up by packet id (QoS 1 and 2) or in order (QoS 0), the
// subscription identifiers of each PUBLISH that tapReader framed off the connection. paho hands
// PUBLISHes to its router on another goroutine, so the reader can be a few packets ahead.
type subIDTap struct {
	mu    sync.Mutex // guards everything below
	byPID map[uint16][]int
	qos0  []qos0Entry
}

type qos0Entry struct {
	ids   []int
	known bool
}

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
	t.qos0[0] = qos0Entry{}
	t.qos0 = t.qos0[1:]
	return e.ids, e.known
}

// record keeps the identifiers of one PUBLISH: first is its fixed header byte, head its variable
// header (at least up to the packet identifier when known is true). known false: they could not be
// decoded (a malformed packet: paho drops the connection when it reads it).
func (t *subIDTap) record(first byte, head []byte, ids []int, known bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if (first>>1)&3 == 0 {
		t.qos0 = append(t.qos0, qos0Entry{ids: ids, known: known})
	} else if known {
		pid := binary.BigEndian.Uint16(head[2+int(binary.BigEndian.Uint16(head)):])
		t.byPID[pid] = ids
	}
}

// tapReader frames the packets read from the server and records the subscription identifiers of
// each PUBLISH in tap before paho reads it. It reads through a buffer: paho's packets.ReadPacket
// reads a packet's fixed header a byte at a time and then the rest, which on the bare connection
// is three or more read system calls per packet; through the buffer, packets that arrived together
// come out of one. A PUBLISH's variable header is decoded once, in place in the buffer (Peek),
// never copied; only a header larger than the buffer (kilobytes of user properties) is read whole
// into memory first. Only paho's single reading goroutine calls Read.
type tapReader struct {
	br  *bufio.Reader
	tap *subIDTap
	rem int    // bytes of the current packet paho has not read yet
	big []byte // the rest of a packet whose header did not fit the buffer, served before br
}

func newTapReader(r io.Reader, size int, tap *subIDTap) *tapReader {
	return &tapReader{br: bufio.NewReaderSize(r, size), tap: tap}
}

func (r *tapReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(r.big) > 0 {
		n := copy(p, r.big)
		r.big = r.big[n:]
		return n, nil
	}
	if r.rem == 0 {
		if err := r.next(); err != nil {
			return 0, err
		}
		if len(r.big) > 0 {
			return r.Read(p)
		}
	}
	n, err := r.br.Read(p[:min(len(p), r.rem)])
	r.rem -= n
	return n, err
}

// next frames the packet that starts at the reader's position: its length, and for a PUBLISH its
// subscription identifiers, recorded in the tap.
func (r *tapReader) next() error {
	b, err := r.br.Peek(2) // every packet has a type byte and at least one length byte
	if err != nil {
		return err
	}
	first := b[0]
	remLen, hdr := 0, 0
	for i, shift := 1, uint(0); ; i, shift = i+1, shift+7 {
		if b, err = r.br.Peek(i + 1); err != nil {
			return err
		}
		c := b[i]
		remLen |= int(c&0x7f) << shift
		if c&0x80 == 0 {
			hdr = i + 1
			break
		}
		if i == 4 { // more than 4 bytes: malformed; paho reads it and drops the connection
			r.rem = i + 1
			return nil
		}
	}
	r.rem = hdr + remLen
	if first>>4 != packets.PUBLISH {
		return nil
	}
	for need := 2; ; {
		if need > remLen { // the packet ends before its properties: malformed
			r.tap.record(first, nil, nil, false)
			return nil
		}
		b, err := r.br.Peek(hdr + need)
		if errors.Is(err, bufio.ErrBufferFull) {
			return r.readWhole(first, hdr)
		}
		if err != nil {
			return err
		}
		var ids []int
		var done bool
		if need, ids, done = parsePublishHead(first, b[hdr:]); done {
			r.tap.record(first, b[hdr:], ids, true)
			return nil
		}
	}
}

// readWhole reads the current packet (a PUBLISH whose header is larger than the buffer) into
// memory, records its identifiers, and leaves it to be served before the buffer.
func (r *tapReader) readWhole(first byte, hdr int) error {
	pkt := make([]byte, r.rem)
	if _, err := io.ReadFull(r.br, pkt); err != nil {
		return err
	}
	r.rem = 0
	if _, ids, done := parsePublishHead(first, pkt[hdr:]); done {
		r.tap.record(first, pkt[hdr:], ids, true)
	} else {
		r.tap.record(first, nil, nil, false)
	}
	r.big = pkt
	return nil
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

// tapConn is a connection whose reads go through a tapReader.
type tapConn struct {
	net.Conn
	r *tapReader
}

func (c *tapConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// tappedTCPConn is a TCP connection whose reads go through a tapReader. Like bufferedTCPConn, it
// embeds the *net.TCPConn so that paho's net.Buffers writes stay one writev system call each.
type tappedTCPConn struct {
	*net.TCPConn
	r *tapReader
}

func (c *tappedTCPConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// WriteTo hides the *net.TCPConn's, which would read past the tap.
func (c *tappedTCPConn) WriteTo(w io.Writer) (int64, error) { return io.Copy(w, c.r) }

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
// all_proxy support) with the reads tapped (tapReader, buffered); with a nil tap, untapped and,
// over plain TCP, buffered (bufferedTCPConn).
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
		tc, isTCP := raw.(*net.TCPConn)
		switch {
		case tap == nil && isTCP:
			return newCoalescingConn(newBufferedTCPConn(tc)), nil
		case tap == nil:
			return newCoalescingConn(raw), nil
		case isTCP:
			return &tappedTCPConn{TCPConn: tc, r: newTapReader(tc, readBufferSize, tap)}, nil
		}
		return packets.NewThreadSafeConn(&tapConn{Conn: raw, r: newTapReader(raw, readBufferSize, tap)}), nil
	case "ssl", "tls", "mqtts", "mqtt+ssl", "tcps":
		tc := tls.Client(raw, cfg.TlsCfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = raw.Close()
			return nil, err
		}
		if tap == nil {
			return newCoalescingConn(tc), nil // tls.Conn reads whole records into its own buffer
		}
		return packets.NewThreadSafeConn(&tapConn{Conn: tc, r: newTapReader(tc, readBufferSize, tap)}), nil
	}
	_ = raw.Close()
	return nil, fmt.Errorf("unsupported scheme %q in %s", u.Scheme, u.Redacted())
}
