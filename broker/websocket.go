package broker

// MQTT over WebSockets (MQTT v5 §6, MQTT 3.1.1 §6, RFC 6455).
//
// The library is github.com/gorilla/websocket: it is already in the module graph (paho.golang's
// autopaho client dials WebSockets with it), it is maintained by the Gorilla project, and its
// NextReader streams a message frame by frame into the caller's buffer without ever allocating by a
// frame's declared length. So the WebSocket connection is only a byte stream to the broker: the
// connection's reader (readPacket) keeps checking each packet's declared size before allocating,
// whatever the framing, and packets may be split across frames or packed into one [MQTT-6.0.0-2].

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// wsSubprotocols are the WebSocket subprotocols accepted, the first one the client offers in this
// order being selected (wsSubprotocol): "mqtt" (MQTT 3.1.1 and 5 [MQTT-6.0.0-3] [MQTT-6.0.0-4])
// and "mqttv3.1", the name MQTT 3.1 clients offer, so that they get the broker's CONNACK refusal
// of their protocol version rather than a failed upgrade.
var wsSubprotocols = []string{"mqtt", "mqttv3.1"}

// wsSubprotocol is the subprotocol selected among those offered: the first of wsSubprotocols the
// client offers ("mqtt" over "mqttv3.1" whatever the client's order), "" for none.
func wsSubprotocol(offered []string) string {
	for _, p := range wsSubprotocols {
		if slices.Contains(offered, p) {
			return p
		}
	}
	return ""
}

// wsOriginAllowed reports whether an upgrade request with the Origin header origin (a browser's,
// RFC 6454; "" from most clients that are not browsers) for the Host host may connect: no origin,
// an origin on loopback (localhost, 127.0.0.0/8, ::1: pages of this machine, and the
// "http://localhost/" that golang.org/x/net/websocket clients such as paho.golang's send), one
// whose host is the request's host (a page served with the broker), or one of allowed ("*": any).
// Without it, any web page of any site open in a browser on a machine that reaches the broker
// could connect on the user's behalf, to a broker that lets anonymous clients in on loopback for
// one (DNS rebinding changes a page's address, not its origin).
func wsOriginAllowed(origin, host string, allowed []string) bool {
	if origin == "" {
		return true
	}
	for _, a := range allowed {
		if a == "*" || strings.EqualFold(strings.TrimSuffix(a, "/"), origin) {
			return true
		}
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	return LoopbackHost(u.Hostname()) || strings.EqualFold(u.Host, host)
}

func wsOriginsList(allowed []string) string {
	if len(allowed) == 0 {
		return "none"
	}
	return strings.Join(allowed, ", ")
}

// errWSNotBinary is the read error for a text (non-binary) WebSocket data frame.
var errWSNotBinary = fmt.Errorf("%w: a WebSocket text frame; MQTT packets are sent in binary frames [MQTT-6.0.0-1]", ErrMalformed)

// wsWriteBuffers are the write buffers of all WebSocket connections, taken for one message only, so
// an idle connection holds none. Sized for the connection writer's 16 KiB flushes plus a frame header.
var wsWriteBuffers = &sync.Pool{}

// wsState is the broker's WebSocket listener state, guarded by Broker.mu.
type wsState struct {
	urls []string // ws:// and wss:// URLs of the bound listeners
	// pending counts the connections the WebSocket listeners accepted and that are not yet upgraded
	// (then they are in Broker.conns) or closed: atomic, not under the lock.
	pending atomic.Int64
}

// listenWebSockets opens the WebSocket listeners of the options: plain (WSAddr) and over TLS
// (WSSAddr, with TLSConfig).
func (b *Broker) listenWebSockets() error {
	if b.opts.WSAddr != "" {
		l, err := net.Listen("tcp", b.opts.WSAddr)
		if err != nil {
			return fmt.Errorf("broker: listen for WebSocket on %q: %w", b.opts.WSAddr, err)
		}
		b.serveWebSocket(l, "ws://")
	}
	if b.opts.WSSAddr != "" {
		l, err := tls.Listen("tcp", b.opts.WSSAddr, wssConfig(b.opts.TLSConfig))
		if err != nil {
			return fmt.Errorf("broker: listen for WebSocket over TLS on %q: %w", b.opts.WSSAddr, err)
		}
		b.serveWebSocket(l, "wss://")
	}
	return nil
}

// ServeWebSocket accepts MQTT over WebSocket connections on l until Close; with tlsConfig (nil for
// none) they are WebSockets over TLS (wss).
func (b *Broker) ServeWebSocket(l net.Listener, tlsConfig *tls.Config) error {
	if b.closed.Load() || !b.started.Load() {
		return ErrClosed
	}
	if tlsConfig == nil {
		b.serveWebSocket(l, "ws://")
		return nil
	}
	b.serveWebSocket(tls.NewListener(l, wssConfig(tlsConfig)), "wss://")
	return nil
}

// wssConfig is cfg for an HTTP/1.1 server: the WebSocket handshake is HTTP/1.1 (RFC 6455 §4.1).
func wssConfig(cfg *tls.Config) *tls.Config {
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	return cfg
}

func (b *Broker) serveWebSocket(l net.Listener, scheme string) {
	srv := &http.Server{
		Handler:           b.webSocketHandler(true),
		ReadHeaderTimeout: b.opts.ConnectTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(b.log.Handler(), slog.LevelDebug),
		ConnState: func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				b.ws.pending.Add(1)
			case http.StateHijacked, http.StateClosed:
				b.ws.pending.Add(-1)
			}
		},
	}
	srv.SetKeepAlivesEnabled(false) // a request that is not an upgrade gets its answer and the close
	b.mu.Lock()
	b.listeners = append(b.listeners, l)
	b.ws.urls = append(b.ws.urls, scheme+l.Addr().String())
	b.mu.Unlock()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		err := srv.Serve(wsListener{Listener: l, b: b}) // returns once Close closes l
		if !b.closed.Load() && !errors.Is(err, net.ErrClosed) {
			b.log.Error("WebSocket listener failed", "addr", l.Addr().String(), "err", err)
		}
		_ = srv.Close() // handshakes still in progress; upgraded connections belong to the broker
	}()
}

// wsListener bounds the connections waiting for their upgrade (twice MaxConnections, as startConn
// bounds those waiting for CONNECT): beyond, a new one is closed at once.
type wsListener struct {
	net.Listener
	b *Broker
}

func (l wsListener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.b.ws.pending.Load() < 2*int64(l.b.opts.MaxConnections) {
			return nc, nil
		}
		l.b.stats.refuse(CodeServerBusy)
		l.b.log.Warn("WebSocket connection refused: too many upgrades pending", "remote", nc.RemoteAddr().String())
		nc.Close()
	}
}

// WebSocketAddrs returns the URLs (ws://host:port, wss://host:port) of the WebSocket listeners.
// Any path is accepted.
func (b *Broker) WebSocketAddrs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.ws.urls)
}

// WebSocketHandler returns an http.Handler that upgrades requests to MQTT over WebSocket
// connections of b, for embedding in an HTTP server of one's own (any path).
func (b *Broker) WebSocketHandler() http.Handler { return b.webSocketHandler(false) }

// webSocketHandler is WebSocketHandler; own says the handler serves the broker's listeners, whose
// pending connections (this one included) count towards the connection bound.
func (b *Broker) webSocketHandler(own bool) http.Handler {
	return &wsHandler{b: b, own: own, up: websocket.Upgrader{
		HandshakeTimeout: b.opts.ConnectTimeout,
		WriteBufferSize:  16<<10 + 16,
		WriteBufferPool:  wsWriteBuffers,
		// No Subprotocols: ServeHTTP selects one itself (wsSubprotocol) and names it in the
		// response header, so the choice does not depend on the library's negotiation order.
		// ServeHTTP checks the Origin itself (wsOriginAllowed), to answer with a reason.
		CheckOrigin: func(*http.Request) bool { return true },
		Error: func(w http.ResponseWriter, _ *http.Request, status int, reason error) {
			http.Error(w, "MQTT over WebSocket: "+reason.Error(), status)
		},
	}}
}

type wsHandler struct {
	b   *Broker
	own bool
	up  websocket.Upgrader
}

func (h *wsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b := h.b
	if b.closed.Load() || !b.started.Load() {
		http.Error(w, "MQTT over WebSocket: the broker is not running", http.StatusServiceUnavailable)
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, `MQTT over WebSocket: this endpoint needs a WebSocket upgrade (RFC 6455) with the subprotocol "mqtt"`, http.StatusUpgradeRequired)
		return
	}
	if origin := r.Header.Get("Origin"); !wsOriginAllowed(origin, r.Host, b.opts.WSOrigins) {
		b.log.Warn("WebSocket upgrade refused: a web page of another origin", "remote", r.RemoteAddr, "origin", origin)
		http.Error(w, fmt.Sprintf("MQTT over WebSocket: pages of origin %q may not connect (allowed: pages of this host and of localhost, and the broker's WebSocket origins (-ws-origins): %s); clients that are not browsers send no Origin",
			origin, wsOriginsList(b.opts.WSOrigins)), http.StatusForbidden)
		return
	}
	offered := websocket.Subprotocols(r)
	proto := wsSubprotocol(offered)
	if proto == "" {
		h.b.log.Info("WebSocket upgrade refused: no MQTT subprotocol", "remote", r.RemoteAddr, "offered", offered)
		http.Error(w, fmt.Sprintf(`MQTT over WebSocket: the client must offer the subprotocol "mqtt" in Sec-WebSocket-Protocol [MQTT-6.0.0-3] (accepted: %s); offered: %q`,
			strings.Join(wsSubprotocols, ", "), offered), http.StatusBadRequest)
		return
	}
	open := 0
	if h.own {
		open = int(b.ws.pending.Load()) - 1 // upgrades in progress, besides this one
	}
	b.mu.Lock()
	open += len(b.conns)
	b.mu.Unlock()
	busy := open >= 2*b.opts.MaxConnections // the bound startConn applies to every connection
	if busy {
		b.stats.refuse(CodeServerBusy)
		http.Error(w, "MQTT over WebSocket: the broker has reached its connection limit", http.StatusServiceUnavailable)
		return
	}
	ws, err := h.up.Upgrade(w, r, http.Header{"Sec-Websocket-Protocol": {proto}})
	if err != nil {
		b.log.Info("WebSocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		return // Upgrade has answered with an HTTP error
	}
	b.startConn(newWSConn(ws))
}

// wsConn is a WebSocket connection as the byte stream of MQTT packets the broker reads and writes:
// each Write is one binary message; Read returns the payloads of binary messages in order, whatever
// their framing.
type wsConn struct {
	ws      *websocket.Conn
	r       io.Reader // the message being read; owned by the reader
	closing atomic.Bool
	once    sync.Once                 // the close frame and the close, once
	wdl     atomic.Pointer[time.Time] // the write deadline, for the next Write
}

var _ net.Conn = (*wsConn)(nil)

func newWSConn(ws *websocket.Conn) *wsConn { return &wsConn{ws: ws} }

func (w *wsConn) Read(p []byte) (int, error) {
	for {
		if w.closing.Load() {
			return 0, net.ErrClosed
		}
		if w.r == nil {
			typ, r, err := w.ws.NextReader()
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) && (ce.Code == websocket.CloseNormalClosure || ce.Code == websocket.CloseGoingAway || ce.Code == websocket.CloseNoStatusReceived) {
					return 0, io.EOF
				}
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				// [MQTT-6.0.0-1]: the Network Connection is closed, the close frame saying why
				// (RFC 6455 §7.4.1: 1003, a type of data the endpoint cannot accept).
				w.once.Do(func() {
					w.closing.Store(true)
					_ = w.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseUnsupportedData,
						"MQTT packets are sent in binary frames [MQTT-6.0.0-1]"), time.Now().Add(time.Second))
					_ = w.ws.Close()
				})
				return 0, errWSNotBinary
			}
			w.r = r
		}
		n, err := w.r.Read(p)
		if errors.Is(err, io.EOF) {
			w.r = nil // end of this message: the stream goes on with the next one
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

// Write is called by one goroutine at a time (the connection's writer), as the library requires.
func (w *wsConn) Write(p []byte) (int, error) {
	var deadline time.Time
	if d := w.wdl.Load(); d != nil {
		deadline = *d
	}
	_ = w.ws.SetWriteDeadline(deadline) // the library's field, read by its writes: set by the writer
	if err := w.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close starts the WebSocket closing handshake (RFC 6455 §7.1.2) and closes the connection without
// waiting for the peer's close frame. The close frame is written on a goroutine of its own, bounded
// by a second: Close may be called with the broker's lock held, by a client that does not read.
func (w *wsConn) Close() error {
	w.once.Do(func() {
		w.closing.Store(true)
		go func() {
			_ = w.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			_ = w.ws.Close()
		}()
	})
	return nil
}

func (w *wsConn) LocalAddr() net.Addr               { return w.ws.LocalAddr() }
func (w *wsConn) RemoteAddr() net.Addr              { return w.ws.RemoteAddr() }
func (w *wsConn) SetReadDeadline(t time.Time) error { return w.ws.SetReadDeadline(t) }
func (w *wsConn) SetDeadline(t time.Time) error {
	return errors.Join(w.SetReadDeadline(t), w.SetWriteDeadline(t))
}

// SetWriteDeadline may be called from any goroutine (closeWith), unlike the library's, which sets a
// field its writes read: the deadline is kept for the next Write and set on the network connection
// for a write in progress.
func (w *wsConn) SetWriteDeadline(t time.Time) error {
	w.wdl.Store(&t)
	return w.ws.NetConn().SetWriteDeadline(t)
}
