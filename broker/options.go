package broker

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"
)

// Options configure a Broker. Start from NewDefaultOptions and change fields; New validates them.
type Options struct {
	// Addr is the TCP listen address for plain MQTT; empty disables it. Default 127.0.0.1:1883.
	Addr string
	// TLSAddr is the listen address for MQTT over TLS; used only when TLSConfig is set; empty
	// disables it.
	TLSAddr string
	// TLSConfig enables the TLS listener (TLSAddr) and serves WSSAddr.
	TLSConfig *tls.Config
	// WSAddr is the listen address for MQTT over WebSocket (subprotocol "mqtt", any path); empty
	// disables it (the default).
	WSAddr string
	// WSSAddr is the listen address for MQTT over WebSocket over TLS, with TLSConfig; empty disables
	// it (the default).
	WSSAddr string
	// WSOrigins are the web origins (scheme://host[:port], as browsers send them in the Origin
	// header, or "*" for any) whose pages may open MQTT over WebSocket connections, besides pages
	// of the broker's own host and of loopback origins (localhost). Clients that send no Origin
	// (devices, servers, command-line tools) are always served. Empty: a page from another site
	// cannot connect, so a web page open in a browser on the broker's machine cannot reach a broker
	// that lets anonymous clients in on loopback.
	WSOrigins []string
	// DataDir holds the durable store; empty runs in memory.
	DataDir string
	// CommitInterval is the minimum time between two store transactions (fsyncs): a larger value
	// batches more writes per fsync and adds up to that much latency; 0 commits as soon as the previous
	// commit ends (batching whatever arrived meanwhile).
	CommitInterval time.Duration
	// MaxConnections is the number of simultaneous client connections; further CONNECTs get 0x97.
	MaxConnections int
	// MaxSessions is the number of sessions (connected or kept for offline clients); a CONNECT that
	// would create one more gets 0x97.
	MaxSessions int
	// MaxPacketSize is the largest packet accepted from a client, checked before allocation (bytes).
	MaxPacketSize uint32
	// ReceiveMaximum is the number of unacknowledged QoS 1/2 publishes a client may send (CONNACK).
	ReceiveMaximum uint16
	// MaxSessionQueue is the number of QoS 1/2 messages kept per session (queued plus in flight); a
	// publish that would exceed it is refused with 0x97.
	MaxSessionQueue int
	// MaxGroupQueue is the number of messages kept for one shared-subscription group.
	MaxGroupQueue int
	// MaxQueuedBytes bounds the memory of all queued and in-flight QoS 1/2 messages (approximate,
	// counted per copy); a publish beyond it is refused with 0x97.
	MaxQueuedBytes int64
	// MaxRetained is the number of retained messages kept; a new retained topic beyond it is refused
	// with 0x97.
	MaxRetained int
	// MaxQoS0Buffered is the number of QoS 0 messages buffered per connection before dropping (counted
	// in Stats.DroppedQoS0); it bounds retained QoS 0 messages sent for a SUBSCRIBE as well.
	MaxQoS0Buffered int
	// ConnectTimeout closes connections that do not send CONNECT in time.
	ConnectTimeout time.Duration
	// MaxSessionExpiry caps the session expiry interval a client may ask for (seconds).
	MaxSessionExpiry uint32
	// V3SessionExpiry is how long the session of an MQTT 3.1.1 client that connected with clean
	// session 0 is kept after it disconnects (seconds; 3.1.1 has no session expiry of its own),
	// capped by MaxSessionExpiry. Default 0xFFFFFFFF: as long as MaxSessionExpiry allows.
	V3SessionExpiry uint32
	// MaxKeepAlive caps the keep alive a client may ask for (seconds); 0 leaves the client's value. A
	// client asking for more, or for 0 (no keep alive), gets this value as Server Keep Alive in
	// CONNACK and is held to it [MQTT-3.2.2-21] [MQTT-3.1.2-22].
	MaxKeepAlive uint16
	// TopicAliasMaximum is the Topic Alias Maximum announced in CONNACK: how many topic aliases a
	// client may define on one connection [MQTT-3.3.2-12]; 0 accepts none. Each alias holds a topic
	// of up to 65535 bytes for the life of the connection, so the default 16 bounds that memory at
	// 1 MiB per connection, the size of one packet at the default MaxPacketSize.
	TopicAliasMaximum uint16
	// TopicAliasOut is how many topic aliases the broker assigns on the PUBLISHes it sends to one
	// connection, never more than the client's Topic Alias Maximum [MQTT-3.3.2-11]; 0 (default)
	// assigns none. Aliases are per connection: a message resent after a reconnect carries its topic.
	TopicAliasOut uint16
	// OverlapDelivery is how a message reaches a session with several matching non-shared
	// subscriptions: OverlapPerSubscription (default) sends one copy per subscription, each with
	// its own subscription identifier [MQTT-3.3.4-4]; OverlapSingle sends one copy at the highest
	// QoS of those subscriptions [MQTT-3.3.4-2] carrying all their identifiers [MQTT-3.3.4-3]. Empty
	// means OverlapPerSubscription.
	OverlapDelivery Overlap
	// Authenticator decides CONNECT and AUTH; nil accepts every client.
	Authenticator Authenticator
	// AuthFailureBurst and AuthFailureRefill limit failed authentications per remote IP address
	// (authlimit.go): after AuthFailureBurst refusals of the Authenticator, a CONNECT from the
	// address gets CONNACK 0x9F without being authenticated, until a token comes back (one every
	// AuthFailureRefill). Defaults 10 and 1 s; a burst < 0 turns the limit off.
	AuthFailureBurst  int
	AuthFailureRefill time.Duration
	// Authorizer decides publish and subscribe; nil allows everything.
	Authorizer Authorizer
	// Services consume publishes inside the broker.
	Services []Service
	// Logger receives the broker's logs; nil uses slog.Default().
	Logger *slog.Logger
}

// NewDefaultOptions returns Options bound to 127.0.0.1:1883, in memory.
func NewDefaultOptions() *Options {
	return &Options{
		Addr:             "127.0.0.1:1883",
		TLSAddr:          "127.0.0.1:8883",
		CommitInterval:   0,
		MaxConnections:   10000,
		MaxSessions:      100000,
		MaxPacketSize:    1 << 20,
		ReceiveMaximum:   1024,
		MaxSessionQueue:  100000,
		MaxGroupQueue:    100000,
		MaxRetained:      100000,
		MaxQueuedBytes:   1 << 30,
		MaxQoS0Buffered:  10000,
		ConnectTimeout:   10 * time.Second,
		MaxSessionExpiry: 7 * 24 * 3600,
		V3SessionExpiry:  0xFFFFFFFF,
		// TopicAliasMaximum: see the field.
		TopicAliasMaximum: 16,
		OverlapDelivery:   OverlapPerSubscription,
		AuthFailureBurst:  10,
		AuthFailureRefill: time.Second,
	}
}

func (o *Options) validate() error {
	for _, origin := range o.WSOrigins {
		if origin == "*" {
			continue
		}
		if u, err := url.Parse(origin); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.TrimSuffix(u.Path, "/") != "" {
			return fmt.Errorf("%w: WebSocket origin %q: want scheme://host[:port] as browsers send it (e.g. https://dashboard.example:8443), or * for any", ErrInvalidOptions, origin)
		}
	}
	switch {
	case o.WSSAddr != "" && o.TLSConfig == nil:
		return fmt.Errorf("%w: WSSAddr %q needs a TLSConfig (a certificate)", ErrInvalidOptions, o.WSSAddr)
	case o.MaxConnections < 1:
		return fmt.Errorf("%w: MaxConnections must be >= 1, got %d", ErrInvalidOptions, o.MaxConnections)
	case o.MaxSessions < o.MaxConnections:
		return fmt.Errorf("%w: MaxSessions must be >= MaxConnections (%d), got %d", ErrInvalidOptions, o.MaxConnections, o.MaxSessions)
	case o.MaxPacketSize < 128 || o.MaxPacketSize > 268435460:
		return fmt.Errorf("%w: MaxPacketSize must be in [128, 268435460], got %d", ErrInvalidOptions, o.MaxPacketSize)
	case o.ReceiveMaximum < 1:
		return fmt.Errorf("%w: ReceiveMaximum must be in [1, 65535], got 0", ErrInvalidOptions)
	case o.MaxSessionQueue < 1:
		return fmt.Errorf("%w: MaxSessionQueue must be >= 1, got %d", ErrInvalidOptions, o.MaxSessionQueue)
	case o.MaxGroupQueue < 1:
		return fmt.Errorf("%w: MaxGroupQueue must be >= 1, got %d", ErrInvalidOptions, o.MaxGroupQueue)
	case o.MaxQueuedBytes < 1:
		return fmt.Errorf("%w: MaxQueuedBytes must be >= 1, got %d", ErrInvalidOptions, o.MaxQueuedBytes)
	case o.MaxRetained < 0:
		return fmt.Errorf("%w: MaxRetained must be >= 0, got %d", ErrInvalidOptions, o.MaxRetained)
	case o.MaxQoS0Buffered < 1:
		return fmt.Errorf("%w: MaxQoS0Buffered must be >= 1, got %d", ErrInvalidOptions, o.MaxQoS0Buffered)
	case o.ConnectTimeout <= 0:
		return fmt.Errorf("%w: ConnectTimeout must be > 0, got %s", ErrInvalidOptions, o.ConnectTimeout)
	case o.OverlapDelivery != "" && o.OverlapDelivery != OverlapPerSubscription && o.OverlapDelivery != OverlapSingle:
		return fmt.Errorf("%w: OverlapDelivery must be %q or %q, got %q", ErrInvalidOptions, OverlapPerSubscription, OverlapSingle, o.OverlapDelivery)
	case o.CommitInterval < 0 || o.CommitInterval > time.Second:
		return fmt.Errorf("%w: CommitInterval must be in [0, 1s], got %s", ErrInvalidOptions, o.CommitInterval)
	}
	return nil
}

// Overlap is a way of delivering a message to a session with several matching subscriptions
// (Options.OverlapDelivery).
type Overlap string

const (
	// OverlapPerSubscription sends one copy per matching subscription [MQTT-3.3.4-4].
	OverlapPerSubscription Overlap = "per-subscription"
	// OverlapSingle sends one copy carrying every matching subscription identifier [MQTT-3.3.4-3].
	OverlapSingle Overlap = "single"
)

// ParseOverlap returns the Overlap named s, or an error naming the accepted values.
func ParseOverlap(s string) (Overlap, error) {
	switch o := Overlap(s); o {
	case OverlapPerSubscription, OverlapSingle:
		return o, nil
	}
	return "", fmt.Errorf("%w: overlap delivery %q: want %q or %q", ErrInvalidOptions, s, OverlapPerSubscription, OverlapSingle)
}
