package broker

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/internal/testutil"
)

// newWSBroker starts a broker with its TCP listener and a WebSocket listener on free ports.
func newWSBroker(t testing.TB, mutate func(*Options)) *Broker {
	t.Helper()
	return newBroker(t, func(o *Options) {
		o.WSAddr = "127.0.0.1:0"
		if mutate != nil {
			mutate(o)
		}
	})
}

// wsURL is the URL of b's first WebSocket listener, with the path browser clients use.
func wsURL(t testing.TB, b *Broker) string {
	t.Helper()
	urls := b.WebSocketAddrs()
	require.NotEmpty(t, urls)
	return urls[0] + "/mqtt"
}

// dialWS opens a WebSocket to u offering the subprotocols.
func dialWS(t testing.TB, u string, tlsc *tls.Config, subprotocols ...string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: subprotocols, TLSClientConfig: tlsc, HandshakeTimeout: waitFor}
	ws, resp, err := d.DialContext(ctxT(t), u, nil)
	require.NoError(t, err)
	resp.Body.Close()
	t.Cleanup(func() { ws.Close() })
	return ws
}

// wsClient connects a paho.golang client to b over a WebSocket. paho writes one packet in several
// Write calls, each a WebSocket message here: the broker must reassemble them [MQTT-6.0.0-2].
func wsClient(t testing.TB, b *Broker, id string, opts ...clientOpt) *client {
	t.Helper()
	ws := dialWS(t, wsURL(t, b), nil, "mqtt")
	c, err := clientOn(t, packets.NewThreadSafeConn(newWSConn(ws)), id, opts...)
	require.NoError(t, err)
	require.Equal(t, CodeSuccess, c.connack.ReasonCode)
	return c
}

// wsRaw is a bare MQTT connection over a WebSocket: raw's helpers work on it (each raw.write is one
// binary message), and frames writes hand-made WebSocket frames.
type wsRaw struct {
	*raw
	ws *websocket.Conn
}

func dialWSRaw(t testing.TB, b *Broker) *wsRaw {
	t.Helper()
	ws := dialWS(t, wsURL(t, b), nil, "mqtt")
	nc := newWSConn(ws)
	return &wsRaw{raw: &raw{nc: nc, br: bufio.NewReader(nc)}, ws: ws}
}

// frames writes WebSocket frames as they are, bypassing the library's framing.
func (r *wsRaw) frames(t testing.TB, frames ...[]byte) {
	t.Helper()
	for _, f := range frames {
		_, err := r.ws.NetConn().Write(f)
		require.NoError(t, err)
	}
}

// closeCode reads until the broker's close frame and returns its status code.
func (r *wsRaw) closeCode(t testing.TB) int {
	t.Helper()
	_ = r.ws.SetReadDeadline(time.Now().Add(waitFor))
	for {
		_, _, err := r.ws.NextReader()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		require.True(t, errors.As(err, &ce), "connection ended without a close frame: %v", err)
		return ce.Code
	}
}

// wsFrame is a client frame (masked, RFC 6455 §5.2) with opcode op carrying payload; its header
// declares length bytes, so a frame may declare more than it carries.
func wsFrame(fin bool, op byte, length uint64, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	switch {
	case length < 126:
		out = append(out, 0x80|byte(length))
	case length < 1<<16:
		out = append(out, 0x80|126, byte(length>>8), byte(length))
	default:
		out = append(out, 0x80|127)
		out = binary.BigEndian.AppendUint64(out, length)
	}
	mask := [4]byte{0x12, 0x34, 0x56, 0x78}
	out = append(out, mask[:]...)
	for i, c := range payload {
		out = append(out, c^mask[i%4])
	}
	return out
}

// binFrame is a complete frame: binary (or continuation when cont) with the payload.
func binFrame(fin, cont bool, payload []byte) []byte {
	op := byte(websocket.BinaryMessage)
	if cont {
		op = 0
	}
	return wsFrame(fin, op, uint64(len(payload)), payload)
}

func connectBytes(id string) []byte {
	cp := packets.NewControlPacket(packets.CONNECT)
	c := cp.Content.(*packets.Connect)
	c.ClientID, c.CleanStart, c.KeepAlive = id, true, 30
	return packetBytes(cp)
}

// stillServes checks that b goes on serving others: a message published over TCP reaches a
// WebSocket subscriber, and the reverse.
func stillServes(t *testing.T, b *Broker) {
	t.Helper()
	id := fmt.Sprint(time.Now().UnixNano())
	ws := wsClient(t, b, "ws-watch-"+id)
	ws.subscribe(t, "watch/"+id, 1)
	tcp := dialClient(t, b, "tcp-watch-"+id)
	tcp.subscribe(t, "watch2/"+id, 1)
	tcp.publish(t, "watch/"+id, 1, "to ws")
	require.Equal(t, "to ws", string(ws.next(t).Payload))
	ws.publish(t, "watch2/"+id, 1, "to tcp")
	require.Equal(t, "to tcp", string(tcp.next(t).Payload))
}

// autopahoClient connects paho.golang's autopaho, a third-party WebSocket MQTT client (it dials
// ws:// and wss:// URLs itself), and returns it with the channel of publishes it receives.
func autopahoClient(t *testing.T, u string, tlsc *tls.Config, id string) (*autopaho.ConnectionManager, chan *paho.Publish) {
	t.Helper()
	pu, err := url.Parse(u)
	require.NoError(t, err)
	msgs := make(chan *paho.Publish, 100)
	cm, err := autopaho.NewConnection(ctxT(t), autopaho.ClientConfig{
		ServerUrls: []*url.URL{pu}, TlsCfg: tlsc, KeepAlive: 30, CleanStartOnInitialConnection: true,
		ConnectTimeout: waitFor,
		ClientConfig: paho.ClientConfig{ClientID: id, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { msgs <- pr.Packet; return true, nil },
		}},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cm.Disconnect(ctxT(t)); <-cm.Done() })
	require.NoError(t, cm.AwaitConnection(ctxT(t)))
	return cm, msgs
}

func nextOf(t *testing.T, msgs chan *paho.Publish) *paho.Publish {
	t.Helper()
	select {
	case p := <-msgs:
		return p
	case <-time.After(waitFor):
		t.Fatal("no message received")
		return nil
	}
}

// MQTT over WebSocket (MQTT v5 §6, RFC 6455) with a third-party WebSocket client (autopaho, which
// offers the subprotocol "mqtt" [MQTT-6.0.0-3] and frames packets as it likes [MQTT-6.0.0-2]): it
// publishes and subscribes, and reaches a TCP client both ways.
func TestWebSocketPublishSubscribe(t *testing.T) {
	b := newWSBroker(t, nil)
	ws, msgs := autopahoClient(t, wsURL(t, b), nil, "browser")
	_, err := ws.Subscribe(ctxT(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "to-ws/#", QoS: 1}}})
	require.NoError(t, err)
	tcp := dialClient(t, b, "device")
	tcp.subscribe(t, "to-tcp", 1)

	_, err = ws.Publish(ctxT(t), &paho.Publish{Topic: "to-tcp", QoS: 1, Payload: []byte("from ws")})
	require.NoError(t, err)
	require.Equal(t, "from ws", string(tcp.next(t).Payload))
	tcp.publish(t, "to-ws/a", 1, "from tcp")
	p := nextOf(t, msgs)
	require.Equal(t, "to-ws/a", p.Topic)
	require.Equal(t, "from tcp", string(p.Payload))
	big := strings.Repeat("x", 100<<10) // larger than the broker's write buffer: split over frames
	tcp.publish(t, "to-ws/big", 0, big)
	require.Equal(t, big, string(nextOf(t, msgs).Payload))
	_, err = ws.Publish(ctxT(t), &paho.Publish{Topic: "to-ws/self", QoS: 0, Payload: []byte("loop")})
	require.NoError(t, err)
	require.Equal(t, "loop", string(nextOf(t, msgs).Payload))
}

// MQTT over WebSocket over TLS (wss), the broker's certificate checked against a test CA.
func TestWebSocketTLS(t *testing.T) {
	cert := selfSigned(t)
	b := newBroker(t, func(o *Options) {
		o.WSAddr, o.WSSAddr = "127.0.0.1:0", "127.0.0.1:0"
		o.TLSAddr = "127.0.0.1:0"
		o.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	})
	urls := b.WebSocketAddrs()
	require.Len(t, urls, 2)
	require.True(t, strings.HasPrefix(urls[0], "ws://127.0.0.1:"), urls[0])
	require.True(t, strings.HasPrefix(urls[1], "wss://127.0.0.1:"), urls[1])
	require.Len(t, b.Addrs(), 4) // TCP, TLS, WebSocket, WebSocket over TLS
	wss := urls[1]
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	tlsc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}

	ws, msgs := autopahoClient(t, wss+"/mqtt", tlsc, "secure-browser")
	_, err = ws.Subscribe(ctxT(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "s", QoS: 1}}})
	require.NoError(t, err)
	tcp := dialClient(t, b, "plain")
	tcp.publish(t, "s", 1, "over wss")
	require.Equal(t, "over wss", string(nextOf(t, msgs).Payload))

	// A client that does not trust the certificate is refused at the TLS handshake.
	_, _, err = (&websocket.Dialer{Subprotocols: []string{"mqtt"}, TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12}}).DialContext(ctxT(t), wss, nil)
	require.ErrorContains(t, err, "certificate")
	stillServes(t, b)
}

// With TLSConfig for WebSocket over TLS only (TLSAddr empty), no TLS listener opens: an empty
// address disables a listener, as for the others.
func TestWebSocketTLSOnly(t *testing.T) {
	b := newBroker(t, func(o *Options) {
		o.WSSAddr, o.TLSAddr = "127.0.0.1:0", ""
		o.TLSConfig = &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, MinVersion: tls.VersionTLS12}
	})
	require.Len(t, b.Addrs(), 2) // TCP and WebSocket over TLS
	require.Len(t, b.WebSocketAddrs(), 1)
}

// New refuses a WebSocket-over-TLS address without a certificate, naming what is missing.
func TestWebSocketTLSNeedsCertificate(t *testing.T) {
	o := NewDefaultOptions()
	o.WSSAddr = "127.0.0.1:0"
	_, err := New(o)
	require.ErrorIs(t, err, ErrInvalidOptions)
	require.ErrorContains(t, err, "WSSAddr")
	require.ErrorContains(t, err, "TLSConfig")
}

// A QoS 1 persistent session over WebSocket: messages published while the client is away are kept
// and delivered when it reconnects with Clean Start 0 [MQTT-3.1.2-4] [MQTT-4.4.0-1].
func TestWebSocketPersistentSessionQoS1(t *testing.T) {
	b := newWSBroker(t, nil)
	s := wsClient(t, b, "phone", withExpiry(60))
	s.subscribe(t, "alerts", 1)
	require.NoError(t, s.Disconnect(&paho.Disconnect{}))
	waitOffline(t, b, "phone")
	pub := dialClient(t, b, "sensor")
	for i := range 5 {
		pub.publish(t, "alerts", 1, fmt.Sprint(i))
	}
	s2 := wsClient(t, b, "phone", withExpiry(60), resume())
	require.True(t, s2.connack.SessionPresent)
	for i := range 5 {
		p := s2.next(t)
		require.Equal(t, fmt.Sprint(i), string(p.Payload))
		require.Equal(t, byte(1), p.QoS)
	}
	s2.none(t, b)
}

// The subprotocol [MQTT-6.0.0-3] [MQTT-6.0.0-4]: "mqtt" is selected when offered (also among others
// and before "mqttv3.1", which MQTT 3.1 clients offer and is accepted too); an upgrade without an
// MQTT subprotocol is refused with 400 and a body naming what is accepted; a request that is not a
// WebSocket upgrade gets 426.
func TestWebSocketSubprotocol(t *testing.T) {
	b := newWSBroker(t, nil)
	u := wsURL(t, b)
	for _, c := range []struct {
		offered []string
		want    string
	}{
		{[]string{"mqtt"}, "mqtt"},
		{[]string{"wamp", "mqtt"}, "mqtt"},
		{[]string{"mqttv3.1", "mqtt"}, "mqtt"},
		{[]string{"mqttv3.1"}, "mqttv3.1"},
	} {
		ws := dialWS(t, u, nil, c.offered...)
		require.Equal(t, c.want, ws.Subprotocol(), "offered %q", c.offered)
		ws.Close()
	}
	for _, offered := range [][]string{nil, {"wamp"}, {"MQTT"}} {
		d := websocket.Dialer{Subprotocols: offered}
		_, resp, err := d.DialContext(ctxT(t), u, nil)
		require.ErrorIs(t, err, websocket.ErrBadHandshake, "offered %q", offered)
		require.Equal(t, http.StatusBadRequest, resp.StatusCode)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Contains(t, string(body), `must offer the subprotocol "mqtt"`)
		require.Contains(t, string(body), "[MQTT-6.0.0-3]")
	}
	resp, err := http.Get(strings.Replace(u, "ws://", "http://", 1))
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusUpgradeRequired, resp.StatusCode)
	require.Contains(t, string(body), "needs a WebSocket upgrade")
	stillServes(t, b)
}

// A web page of another site (Origin header, as browsers send it) is refused with 403 and a reason,
// before any MQTT: otherwise any page open in a browser on the broker's machine could connect to a
// broker that lets anonymous clients in on loopback. No Origin (devices, tools), a page of the
// broker's own host or of loopback (and x/net/websocket's default "http://localhost/"), and the
// origins of Options.WSOrigins connect; "*" allows any.
func TestWebSocketOrigin(t *testing.T) {
	var logs testutil.SyncBuffer
	b := newWSBroker(t, func(o *Options) {
		o.WSOrigins = []string{"https://dashboard.example:8443"}
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	u := wsURL(t, b)
	host := strings.TrimPrefix(strings.SplitN(u, "/mqtt", 2)[0], "ws://")
	dial := func(origin string) (*websocket.Conn, *http.Response, error) {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: waitFor}
		return d.DialContext(ctxT(t), u, h)
	}
	for _, origin := range []string{"https://evil.example", "http://dashboard.example:8443", "null", "http://127.0.0.1.evil.example"} {
		_, resp, err := dial(origin)
		require.ErrorIs(t, err, websocket.ErrBadHandshake, "origin %q", origin)
		require.Equal(t, http.StatusForbidden, resp.StatusCode, "origin %q", origin)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Contains(t, string(body), fmt.Sprintf("pages of origin %q may not connect", origin))
		require.Contains(t, string(body), "https://dashboard.example:8443")
	}
	require.Contains(t, logs.String(), "WebSocket upgrade refused: a web page of another origin")
	for _, origin := range []string{"", "http://" + host, "https://dashboard.example:8443", "http://localhost/", "http://localhost:3000", "http://127.0.0.1:8080", "http://[::1]:8080"} {
		ws, resp, err := dial(origin)
		require.NoError(t, err, "origin %q", origin)
		resp.Body.Close()
		require.Equal(t, "mqtt", ws.Subprotocol())
		ws.Close()
	}
	stillServes(t, b)

	anyOrigin := newWSBroker(t, func(o *Options) { o.WSOrigins = []string{"*"} })
	u = wsURL(t, anyOrigin)
	ws, resp, err := dial("https://evil.example")
	require.NoError(t, err, "* allows any origin")
	resp.Body.Close()
	ws.Close()

	for _, bad := range []string{"dashboard.example", "ftp://x", "https://", "https://a.example/path"} {
		o := NewDefaultOptions()
		o.Addr, o.WSAddr, o.WSOrigins = "127.0.0.1:0", "127.0.0.1:0", []string{bad}
		_, err := New(o)
		require.ErrorIs(t, err, ErrInvalidOptions, "origin %q", bad)
		require.ErrorContains(t, err, fmt.Sprintf("WebSocket origin %q: want scheme://host[:port]", bad))
	}
}

// [MQTT-6.0.0-2]: packets split across frames and messages are reassembled: a CONNECT one byte per
// message, a SUBSCRIBE in one message fragmented into continuation frames (RFC 6455 §5.4), and a
// PUBLISH whose bytes straddle two messages with the next packet.
func TestWebSocketPacketSplitAcrossFrames(t *testing.T) {
	b := newWSBroker(t, nil)
	r := dialWSRaw(t, b)
	for _, c := range connectBytes("split") {
		r.frames(t, binFrame(true, false, []byte{c}))
	}
	require.Equal(t, packets.CONNACK, r.read(t).Type)

	sub := packets.NewControlPacket(packets.SUBSCRIBE)
	sub.Content.(*packets.Subscribe).PacketID = 1
	sub.Content.(*packets.Subscribe).Subscriptions = []packets.SubOptions{{Topic: "split/t", QoS: 1}}
	sb := packetBytes(sub)
	r.frames(t, binFrame(false, false, sb[:2]), binFrame(false, true, sb[2:5]), binFrame(true, true, sb[5:]))
	require.Equal(t, packets.SUBACK, r.read(t).Type)

	pb := packetBytes(
		&packets.Publish{Topic: "split/t", QoS: 1, PacketID: 2, Payload: []byte("halves"), Properties: &packets.Properties{}},
		packets.NewControlPacket(packets.PINGREQ))
	r.frames(t, binFrame(true, false, pb[:7]), binFrame(true, false, pb[7:]))
	got := map[byte]*packets.ControlPacket{}
	for range 3 { // PUBACK, the PUBLISH to its own subscription, PINGRESP
		cp := r.read(t)
		require.NotNil(t, cp)
		got[cp.Type] = cp
	}
	require.Contains(t, got, packets.PUBACK)
	require.Contains(t, got, packets.PINGRESP)
	require.Equal(t, "halves", string(got[packets.PUBLISH].Content.(*packets.Publish).Payload))
	stillServes(t, b)
}

// [MQTT-6.0.0-2]: several packets in one frame: CONNECT, SUBSCRIBE, PUBLISH and PINGREQ in a single
// binary frame are all served, in order.
func TestWebSocketPacketsPackedInOneFrame(t *testing.T) {
	b := newWSBroker(t, nil)
	r := dialWSRaw(t, b)
	sub := packets.NewControlPacket(packets.SUBSCRIBE)
	sub.Content.(*packets.Subscribe).PacketID = 1
	sub.Content.(*packets.Subscribe).Subscriptions = []packets.SubOptions{{Topic: "packed", QoS: 1}}
	all := append(connectBytes("packed"), packetBytes(sub,
		&packets.Publish{Topic: "packed", QoS: 1, PacketID: 2, Payload: []byte("together"), Properties: &packets.Properties{}},
		packets.NewControlPacket(packets.PINGREQ))...)
	r.frames(t, binFrame(true, false, all))
	require.Equal(t, packets.CONNACK, r.read(t).Type)
	require.Equal(t, packets.SUBACK, r.read(t).Type)
	var types []byte
	var payload string
	for range 3 {
		cp := r.read(t)
		require.NotNil(t, cp)
		types = append(types, cp.Type)
		if p, ok := cp.Content.(*packets.Publish); ok {
			payload = string(p.Payload)
		}
	}
	require.ElementsMatch(t, []byte{packets.PUBACK, packets.PUBLISH, packets.PINGRESP}, types)
	require.Equal(t, "together", payload)
}

// [MQTT-3.2.2-15] [MQTT-3.1.2-24] over WebSocket: a packet declaring more than the Maximum Packet
// Size is refused with DISCONNECT 0x95 as soon as its header arrives, whatever the framing: its
// header split over frames, or inside a frame declaring 1 TiB of which only the header is sent, or a
// packet spread over frames of which only the first is sent. The broker answers before the rest of
// the frame or packet exists, so it allocated neither (as the TCP path's
// TestOversizedPacketRefusedBeforeAllocation proves). Others are unaffected.
func TestWebSocketOversizedPacketRefusedBeforeAllocation(t *testing.T) {
	b := newWSBroker(t, func(o *Options) { o.MaxPacketSize = 1024 })
	huge := []byte{0x30, 0xff, 0xff, 0xff, 0x5f} // PUBLISH declaring 200 MB
	over := packetBytes(&packets.Publish{Topic: "t", Payload: make([]byte, 2000), Properties: &packets.Properties{}})
	cases := []struct {
		name   string
		frames [][]byte
	}{
		{"header split over continuation frames", [][]byte{
			binFrame(false, false, huge[:2]), binFrame(false, true, huge[2:4]), binFrame(true, true, huge[4:])}},
		{"header split over messages", [][]byte{binFrame(true, false, huge[:1]), binFrame(true, false, huge[1:])}},
		{"frame declaring 1 TiB", [][]byte{wsFrame(true, websocket.BinaryMessage, 1<<40, huge)}},
		{"2000-byte packet, first of its frames only", [][]byte{binFrame(false, false, over[:100])}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := dialWSRaw(t, b)
			r.connect(t, fmt.Sprint("big", i), true, 0)
			r.frames(t, c.frames...)
			r.expectDisconnect(t, CodePacketTooLarge)
		})
	}
	require.Equal(t, int64(len(cases)), b.Stats().Refused["packet_too_large"])
	stillServes(t, b)
}

// [MQTT-6.0.0-1]: a text frame closes the Network Connection, before or after CONNECT; the close
// frame carries 1003 (RFC 6455 §7.4.1, data it cannot accept) and names the rule; others are
// unaffected.
func TestWebSocketTextFrameClosed(t *testing.T) {
	b := newWSBroker(t, nil)
	watcher := wsClient(t, b, "watcher")
	watcher.subscribe(t, "ok", 1)

	r := dialWSRaw(t, b)
	r.connect(t, "texter", true, 0)
	require.NoError(t, r.ws.WriteMessage(websocket.TextMessage, packetBytes(packets.NewControlPacket(packets.PINGREQ))))
	require.Equal(t, websocket.CloseUnsupportedData, r.closeCode(t))

	r = dialWSRaw(t, b)
	require.NoError(t, r.ws.WriteMessage(websocket.TextMessage, connectBytes("texter2")))
	require.Equal(t, websocket.CloseUnsupportedData, r.closeCode(t))
	// Counted once the reader returns, which may be just after the client sees the close frame.
	require.Eventually(t, func() bool { return b.Stats().Refused["malformed_packet"] == 2 }, waitFor, 2*time.Millisecond)

	dialClient(t, b, "pub").publish(t, "ok", 1, "still up")
	require.Equal(t, "still up", string(watcher.next(t).Payload))
	stillServes(t, b)
}

// Bad MQTT input over WebSocket is refused as over TCP: the reason code the spec names in a
// DISCONNECT, then the close; others are unaffected.
func TestWebSocketBadInput(t *testing.T) {
	b := newWSBroker(t, nil)
	cases := []struct {
		name string
		data []byte
		code byte
	}{
		{"reserved flags [MQTT-2.1.3-1]", []byte{0xC1, 0x00}, CodeMalformedPacket},
		{"QoS 3 [MQTT-3.3.1-4]", []byte{0x36, 0x05, 0x00, 0x01, 'a', 0x00, 0x01}, CodeMalformedPacket},
		{"remaining length of 5 bytes [MQTT-1.5.5-1]", []byte{0x30, 0x80, 0x80, 0x80, 0x80, 0x01}, CodeMalformedPacket},
		{"second CONNECT [MQTT-3.1.0-2]", connectBytes("again"), CodeProtocolError},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := dialWSRaw(t, b)
			r.connect(t, fmt.Sprint("bad", i), true, 0)
			r.frames(t, binFrame(true, false, c.data))
			r.expectDisconnect(t, c.code)
		})
	}
	// A first packet that is not CONNECT: closed without reply [MQTT-3.1.0-1].
	r := dialWSRaw(t, b)
	r.write(t, []byte{0xC0, 0x00})
	require.Nil(t, r.read(t))
	stillServes(t, b)
}

// The connection limit is one for TCP and WebSocket together: with MaxConnections 2 taken by one
// client of each, a third gets CONNACK 0x97 on either; and beyond twice the limit of open
// connections (some without CONNECT yet) the WebSocket upgrade itself is refused with 503.
func TestWebSocketConnectionLimitSharedWithTCP(t *testing.T) {
	b := newWSBroker(t, func(o *Options) { o.MaxConnections = 2 })
	dialClient(t, b, "tcp1")
	ws1 := wsClient(t, b, "ws1")
	r := dialWSRaw(t, b)
	cp := packets.NewControlPacket(packets.CONNECT)
	cp.Content.(*packets.Connect).ClientID = "ws2"
	r.send(t, cp)
	require.Equal(t, CodeQuotaExceeded, r.read(t).Content.(*packets.Connack).ReasonCode)
	c, err := tryClient(t, b.Addrs()[0], "tcp2")
	require.NoError(t, err)
	require.Equal(t, CodeQuotaExceeded, c.connack.ReasonCode)

	// Two connections without CONNECT bring the open ones to 4 = 2 × MaxConnections, once the
	// refused ones have ended.
	conns := func(n int) func() bool {
		return func() bool {
			b.mu.Lock()
			defer b.mu.Unlock()
			return len(b.conns) == n
		}
	}
	require.Eventually(t, conns(2), waitFor, 2*time.Millisecond)
	dialRaw(t, b)
	dialWSRaw(t, b)
	require.Eventually(t, conns(4), waitFor, 2*time.Millisecond)
	_, resp, err := (&websocket.Dialer{Subprotocols: []string{"mqtt"}}).DialContext(ctxT(t), wsURL(t, b), nil)
	require.ErrorIs(t, err, websocket.ErrBadHandshake)
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Contains(t, string(body), "connection limit")

	// The connected clients keep working.
	ws1.subscribe(t, "still", 1)
	ws1.publish(t, "still", 1, "here")
	require.Equal(t, "here", string(ws1.next(t).Payload))
}

// Close disconnects WebSocket clients with DISCONNECT 0x8B [MQTT-3.14.2-1 lists 0x8B Server shutting
// down] and closes the listener.
func TestWebSocketBrokerClose(t *testing.T) {
	o := NewDefaultOptions()
	o.Addr, o.WSAddr = "", "127.0.0.1:0"
	o.Logger = newBroker(t, nil).log
	b, err := New(o)
	require.NoError(t, err)
	require.NoError(t, b.Start())
	r := dialWSRaw(t, b)
	r.connect(t, "leaving", true, 0)
	u := wsURL(t, b)
	require.NoError(t, b.Close())
	r.expectDisconnect(t, CodeServerShuttingDown)
	_, _, err = (&websocket.Dialer{Subprotocols: []string{"mqtt"}}).DialContext(ctxT(t), u, nil)
	require.ErrorContains(t, err, "connection refused")
}

// fuzzFrames turns data into masked client frames: each frame is a byte of FIN and opcode, a
// length byte, then that many payload bytes (fewer at the end).
func fuzzFrames(data []byte) []byte {
	var out []byte
	for len(data) >= 2 {
		b0, n := data[0], int(data[1])
		data = data[2:]
		n = min(n, len(data))
		out = append(out, wsFrame(b0&0x80 != 0, b0&0x0f, uint64(n), data[:n])...)
		data = data[n:]
	}
	return out
}

// FuzzWebSocketConnection feeds a CONNECT in a binary frame, then arbitrary WebSocket frames
// (any opcode, fragmentation and split or packed MQTT packets), to a live broker over a real
// WebSocket: the broker must not panic, must end the connection once the client stops sending
// (TCP half-close), and must keep serving.
func FuzzWebSocketConnection(f *testing.F) {
	sub := packets.NewControlPacket(packets.SUBSCRIBE)
	sub.Content.(*packets.Subscribe).PacketID = 1
	sub.Content.(*packets.Subscribe).Subscriptions = []packets.SubOptions{{Topic: "#", QoS: 1}}
	pub := packetBytes(sub, &packets.Publish{Topic: "a", QoS: 1, PacketID: 2, Payload: []byte("x"), Properties: &packets.Properties{}})
	f.Add(append([]byte{0x82, byte(len(pub))}, pub...))                                                         // packed in one frame
	f.Add(append(append([]byte{0x02, 4}, pub[:4]...), append([]byte{0x80, byte(len(pub) - 4)}, pub[4:]...)...)) // fragmented
	f.Add([]byte{0x81, 2, 0xc0, 0x00})                                                                          // text frame
	f.Add([]byte{0x89, 1, 'p', 0x82, 2, 0xc0, 0x00})                                                            // ping, then PINGREQ
	f.Add([]byte{0x80, 2, 0xc0, 0x00})                                                                          // continuation without a start
	f.Add([]byte{0x88, 2, 0x03, 0xe8})                                                                          // close 1000
	f.Add([]byte{0x82, 5, 0x30, 0xff, 0xff, 0xff, 0x7f})                                                        // oversized packet

	o := NewDefaultOptions()
	o.Addr, o.WSAddr, o.MaxPacketSize = "", "127.0.0.1:0", 4096
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := New(o)
	if err != nil {
		f.Fatal(err)
	}
	if err := b.Start(); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = b.Close() })
	u := b.WebSocketAddrs()[0]
	connect := binFrame(true, false, connectBytes("fuzz"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ws, resp, err := (&websocket.Dialer{Subprotocols: []string{"mqtt"}}).Dial(u, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		nc := ws.NetConn()
		defer nc.Close()
		_, _ = nc.Write(append(append([]byte(nil), connect...), fuzzFrames(data)...))
		_ = nc.(*net.TCPConn).CloseWrite()
		_ = nc.SetReadDeadline(time.Now().Add(waitFor))
		_, err = io.Copy(io.Discard, nc) // EOF or a reset: both end the connection
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the broker did not end the connection: %v", err)
		}
	})
}

// [MQTT-3.1.2-22] over WebSocket: a client silent for 1.5 × its Keep Alive is disconnected with
// 0x8D, as over TCP (the read deadline reaches the library's reader and comes back as a time-out).
func TestWebSocketKeepAlive(t *testing.T) {
	b := newWSBroker(t, nil)
	r := dialWSRaw(t, b)
	cp := packets.NewControlPacket(packets.CONNECT)
	c := cp.Content.(*packets.Connect)
	c.ClientID, c.CleanStart, c.KeepAlive = "sleepy", true, 1
	r.send(t, cp)
	require.Equal(t, packets.CONNACK, r.read(t).Type)
	r.expectDisconnect(t, CodeKeepAliveTimeout)
	require.Equal(t, int64(1), b.Stats().Refused["keep_alive_timeout"])
	stillServes(t, b)
}

// Connections waiting for their upgrade are bounded like those waiting for CONNECT (twice
// MaxConnections): beyond, a new one is closed at once, before any HTTP; once one ends, a WebSocket
// client connects again.
func TestWebSocketPendingUpgradesBounded(t *testing.T) {
	b := newWSBroker(t, func(o *Options) { o.MaxConnections = 1 })
	addr := strings.TrimPrefix(b.WebSocketAddrs()[0], "ws://")
	var idle []net.Conn
	for range 2 {
		nc, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		t.Cleanup(func() { nc.Close() })
		idle = append(idle, nc)
	}
	require.Eventually(t, func() bool { return b.ws.pending.Load() == 2 }, waitFor, 2*time.Millisecond)
	extra, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer extra.Close()
	_ = extra.SetReadDeadline(time.Now().Add(waitFor))
	_, err = extra.Read(make([]byte, 1))
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the connection beyond the bound was not closed")
	require.Error(t, err)
	require.Eventually(t, func() bool { return b.Stats().Refused["server_busy"] == 1 }, waitFor, 2*time.Millisecond)

	idle[0].Close()
	require.Eventually(t, func() bool { return b.ws.pending.Load() == 1 }, waitFor, 2*time.Millisecond)
	c := wsClient(t, b, "after")
	c.subscribe(t, "t", 1)
	c.publish(t, "t", 1, "in")
	require.Equal(t, "in", string(c.next(t).Payload))
}

// Broker.WebSocketHandler serves MQTT over WebSocket in an HTTP server of one's own (here on the
// path /mqtt of an httptest server), and ServeWebSocket on listeners of one's own, plain and TLS.
func TestWebSocketHandlerAndServe(t *testing.T) {
	b := newBroker(t, nil)
	mux := http.NewServeMux()
	mux.Handle("/mqtt", b.WebSocketHandler())
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ws := dialWS(t, "ws"+strings.TrimPrefix(srv.URL, "http")+"/mqtt", nil, "mqtt")
	c, err := clientOn(t, packets.NewThreadSafeConn(newWSConn(ws)), "embedded")
	require.NoError(t, err)
	c.subscribe(t, "e", 1)
	dialClient(t, b, "tcp").publish(t, "e", 1, "through a handler")
	require.Equal(t, "through a handler", string(c.next(t).Payload))

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.NoError(t, b.ServeWebSocket(l, nil))
	require.Equal(t, []string{"ws://" + l.Addr().String()}, b.WebSocketAddrs())
	c2 := wsClient(t, b, "served")
	c2.subscribe(t, "e", 1)
	dialClient(t, b, "tcp2").publish(t, "e", 1, "through Serve")
	require.Equal(t, "through Serve", string(c2.next(t).Payload))

	cert := selfSigned(t)
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	lt, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.NoError(t, b.ServeWebSocket(lt, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}))
	require.Equal(t, "wss://"+lt.Addr().String(), b.WebSocketAddrs()[1])
	ws = dialWS(t, b.WebSocketAddrs()[1], &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, "mqtt")
	c3, err := clientOn(t, packets.NewThreadSafeConn(newWSConn(ws)), "served-tls")
	require.NoError(t, err)
	c3.subscribe(t, "e", 1)
	dialClient(t, b, "tcp3").publish(t, "e", 1, "through Serve over TLS")
	require.Equal(t, "through Serve over TLS", string(c3.next(t).Payload))
}

// rawPacket reads one packet's bytes (fixed header, remaining length, body) as they are, whatever
// the protocol version, or nil once the connection is closed.
func rawPacket(t *testing.T, r *bufio.Reader) []byte {
	t.Helper()
	first, err := r.ReadByte()
	if err != nil {
		return nil
	}
	out := []byte{first}
	var n, shift int
	for {
		c, err := r.ReadByte()
		require.NoError(t, err)
		out = append(out, c)
		n |= int(c&0x7f) << shift
		shift += 7
		if c&0x80 == 0 {
			break
		}
	}
	body := make([]byte, n)
	_, err = io.ReadFull(r, body)
	require.NoError(t, err)
	return append(out, body...)
}

// connectV is a CONNECT of protocol name and level (4: MQTT 3.1.1, 3: MQTT 3.1 "MQIsdp"), clean
// session, keep alive 60, without properties.
func connectV(name string, level byte, id string) []byte {
	body := []byte{0, byte(len(name))}
	body = append(body, name...)
	body = append(body, level, 0x02, 0, 60, 0, byte(len(id)))
	body = append(body, id...)
	return append([]byte{0x10, byte(len(body))}, body...)
}

// The broker answers a CONNECT over WebSocket byte for byte as over TCP, for MQTT 5, 3.1.1 (level 4)
// and 3.1 (level 3, offered with the subprotocol "mqttv3.1"): the transport is below the protocol,
// so what the broker does for each version holds on both (before MQTT 3.1.1 support, levels 4 and
// 3 are closed without an answer on both).
func TestWebSocketSameAnswersAsTCP(t *testing.T) {
	b := newWSBroker(t, nil)
	for _, c := range []struct {
		name        string
		connect     []byte
		subprotocol string
		v3Code      int // the 3.1.1 CONNACK's return code; -1 for a v5 CONNACK
	}{
		{"MQTT 5", connectBytes("v5-same"), "mqtt", -1},
		{"MQTT 3.1.1", connectV("MQTT", 4, "v4-same"), "mqtt", 0x00},
		// 3.1 is refused with return code 0x01 (unacceptable protocol version) [MQTT-3.1.2-2].
		{"MQTT 3.1", connectV("MQIsdp", 3, "v3-same"), "mqttv3.1", 0x01},
	} {
		t.Run(c.name, func(t *testing.T) {
			answer := func(nc io.ReadWriter) []byte {
				_, err := nc.Write(c.connect)
				require.NoError(t, err)
				return rawPacket(t, bufio.NewReader(nc))
			}
			tcp := dialRaw(t, b)
			_ = tcp.nc.SetReadDeadline(time.Now().Add(waitFor))
			overTCP := answer(tcp.nc)
			tcp.nc.Close()
			ws := dialWS(t, wsURL(t, b), nil, c.subprotocol)
			require.Equal(t, c.subprotocol, ws.Subprotocol())
			_ = ws.SetReadDeadline(time.Now().Add(waitFor))
			overWS := answer(newWSConn(ws))
			require.NotEmpty(t, overTCP, "no CONNACK over TCP")
			require.Equal(t, packets.CONNACK, overTCP[0]>>4)
			if c.v3Code >= 0 {
				require.Equal(t, []byte{0x20, 0x02, 0x00, byte(c.v3Code)}, overTCP, "3.1.1 CONNACK: session present 0, return code")
			}
			require.Equal(t, overTCP, overWS)
		})
	}
}

// A WebSocket closing handshake without DISCONNECT ends the Network Connection as a TCP close does:
// the will is published [MQTT-3.1.2-8], and the broker answers the close frame with its own
// (RFC 6455 §5.5.1).
func TestWebSocketCloseFrameSendsWill(t *testing.T) {
	b := newWSBroker(t, nil)
	watcher := dialClient(t, b, "watcher")
	watcher.subscribe(t, "wills/#", 1)
	r := dialWSRaw(t, b)
	cp := packets.NewControlPacket(packets.CONNECT)
	c := cp.Content.(*packets.Connect)
	c.ClientID, c.CleanStart, c.KeepAlive = "mortal", true, 30
	c.WillFlag, c.WillQOS, c.WillTopic, c.WillMessage = true, 1, "wills/mortal", []byte("gone")
	c.WillProperties = &packets.Properties{}
	r.send(t, cp)
	require.Equal(t, packets.CONNACK, r.read(t).Type)
	require.NoError(t, r.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(waitFor)))
	require.Equal(t, websocket.CloseNormalClosure, r.closeCode(t))
	p := watcher.next(t)
	require.Equal(t, "wills/mortal", p.Topic)
	require.Equal(t, "gone", string(p.Payload))
}
