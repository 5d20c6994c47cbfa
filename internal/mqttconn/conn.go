package mqttconn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"
	"github.com/eclipse/paho.golang/paho/session/state"
)

// Logger is the subset of dapr/kit's logger the connection uses.
type Logger interface {
	Debugf(format string, args ...any)
	Infof(format string, args ...any)
	Warnf(format string, args ...any)
	Errorf(format string, args ...any)
}

// Options configure Dial.
type Options struct {
	Settings Settings
	Kind     Kind
	// ReceiveMaximum is sent in CONNECT (0: not sent, the broker then assumes 65535).
	ReceiveMaximum uint16
	// NoSession connects with Clean Start 1 and Session Expiry 0 every time, instead of resuming a
	// session: the broker keeps nothing for the client between connections, and paho never resends
	// a PUBLISH after a reconnection (its in-flight messages are dropped when the connection is
	// lost). Settings.SessionExpiry is not used then.
	NoSession bool
	// DeferAcks, if not zero, lets the PUBACK of a received QoS 1 message wait up to that long for
	// the next packet sent on the connection, to go out in the same system call (a request/response
	// client sends a request for about every response it acknowledges). Only on untapped
	// connections (OnPublish nil).
	DeferAcks time.Duration
	// ManualAcks makes the caller acknowledge every QoS 1/2 message with Received.Ack (only with
	// OnPublish).
	ManualAcks bool
	// AckFlushInterval is the shortest time between two writes of manual acknowledgements (0:
	// DefaultAckFlushInterval): the acks that became ready meanwhile leave together in one write.
	AckFlushInterval time.Duration
	// OnPublishReceived is called on paho's single receive goroutine: it must not block.
	OnPublishReceived func(paho.PublishReceived) (bool, error)
	// OnPublish, when set, replaces OnPublishReceived: it gets every subscription identifier the
	// PUBLISH carried (read off the wire). Called on paho's single receive goroutine: it must not
	// block.
	OnPublish func(Received)
	// OnConnectionUp is called after every (re)connection, on its own goroutine.
	OnConnectionUp func(cm *autopaho.ConnectionManager, connack *paho.Connack)
	// OnConnectionDown is called when an established connection is lost. It must not block.
	OnConnectionDown func()
	Logger           Logger
}

// DefaultAckFlushInterval is the shortest time between two writes of manual acknowledgements (in
// receive order) unless Options.AckFlushInterval says otherwise: an ack that becomes ready leaves
// at once when none left for that long, else with the others at the end of it. Against a broker
// that honours Receive Maximum it bounds receive throughput at about ReceiveMaximum /
// AckFlushInterval messages per second. Nothing runs while no ack is waiting.
const DefaultAckFlushInterval = 2 * time.Millisecond

// ErrConnect is wrapped by the errors of a first connection that did not succeed.
var ErrConnect = errors.New("cannot connect to the MQTT broker")

// Conn is a supervised MQTT v5 connection: it reconnects with exponential backoff and jitter,
// resumes the session (clean start false; unless Options.NoSession) and re-authenticates when the
// token file rotates.
type Conn struct {
	settings Settings
	log      Logger
	ackFlush time.Duration
	url      *url.URL
	clientID string

	noSession bool // Options.NoSession

	cm     *autopaho.ConnectionManager
	cancel context.CancelFunc
	wg     sync.WaitGroup

	tap           atomic.Pointer[subIDTap] // of the current connection, when Options.OnPublish is set
	acks          atomic.Pointer[ackQueue] // of the current connection, when Options.ManualAcks is set
	connected     atomic.Bool
	closing       atomic.Bool
	maxPacketSize atomic.Uint32 // broker's Maximum Packet Size from the last CONNACK; 0 = none given
	connects      atomic.Uint64
	reauths       atomic.Uint64
	firstUp       chan struct{} // closed once the first connection's up callbacks have returned
	firstUpOnce   sync.Once

	mu        sync.Mutex // guards the fields below
	lastToken []byte
	lastErr   error
}

// Dial validates the settings, connects, and waits for the first CONNACK and the connection-up
// callbacks it runs, up to the settings' ConnectTimeout (or ctx). A broker that refuses the
// connection for a reason retrying cannot fix (bad credentials, not authorized, ...) fails at once
// with the CONNACK reason.
func Dial(ctx context.Context, o Options) (*Conn, error) {
	s := o.Settings
	if err := s.Validate(); err != nil {
		return nil, err
	}
	u, err := s.BrokerURL()
	if err != nil {
		return nil, err
	}
	tlsCfg, err := s.TLSConfig(u.Hostname(), UsesTLS(u))
	if err != nil {
		return nil, err
	}
	var cas *caReloader // re-reads caFile at every connection attempt (a rotated trust bundle)
	if tlsCfg != nil && s.CAFile != "" && !s.InsecureSkipVerify {
		if cas, err = newCAReloader(s.CAFile, tlsCfg); err != nil {
			return nil, err
		}
	}
	clientID, err := s.ResolveClientID(o.Kind)
	if err != nil {
		return nil, err
	}
	if s.SATAuthFile != "" {
		if _, err := readToken(s.SATAuthFile); err != nil {
			return nil, err
		}
	}
	if s.PasswordFile != "" {
		if _, err := readPassword(s.PasswordFile); err != nil {
			return nil, err
		}
	}
	c := &Conn{settings: s, noSession: o.NoSession, log: o.Logger, url: u, clientID: clientID, ackFlush: o.AckFlushInterval,
		firstUp: make(chan struct{})}
	if c.ackFlush <= 0 {
		c.ackFlush = DefaultAckFlushInterval
	}
	if c.log == nil {
		c.log = nopLogger{}
	}
	if tlsCfg != nil && s.InsecureSkipVerify {
		c.log.Warnf("%s", s.insecureWarning(u.Redacted()))
	}
	// attempt is one connection attempt: the TLS configuration of the moment (caFile re-read),
	// and a failed handshake explained.
	attempt := func(ctx context.Context, cc autopaho.ClientConfig, u *url.URL, t *subIDTap) (net.Conn, error) {
		if cas != nil {
			cc.TlsCfg = cas.config(c.log)
		}
		nc, err := dial(ctx, cc, u, t)
		if err != nil && cc.TlsCfg != nil {
			err = explainTLS(err, cc.TlsCfg.ServerName)
		}
		return nc, err
	}

	dialURL := *u
	if dialURL.Scheme == "mqtts" {
		dialURL.Scheme = "tls" // autopaho's name for it
	}
	firstErr := make(chan error, 1)
	cfg := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{&dialURL},
		TlsCfg:                        tlsCfg,
		KeepAlive:                     uint16(s.KeepAlive / time.Second),
		CleanStartOnInitialConnection: o.NoSession,
		SessionExpiryInterval:         sessionExpiry(s, o.NoSession),
		ReconnectBackoff:              autopaho.NewExponentialBackoff(250*time.Millisecond, 30*time.Second, time.Second, 2),
		ConnectTimeout:                minDuration(s.ConnectTimeout, 10*time.Second),
		ConnectUsername:               s.Username,
		ConnectPassword:               []byte(s.Password),
		ConnectPacketBuilder: func(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if cp.Properties == nil {
				cp.Properties = &paho.ConnectProperties{}
			}
			if o.NoSession {
				cp.CleanStart = true // on reconnections too: autopaho sets it only on the first
				cp.Properties.SessionExpiryInterval = nil
			}
			if o.ReceiveMaximum > 0 {
				rm := o.ReceiveMaximum
				cp.Properties.ReceiveMaximum = &rm
			}
			if s.PasswordFile != "" {
				// Read at every CONNECT: a rotated secret (a Compose or Kubernetes secret file)
				// is used from the next reconnection on.
				pw, err := readPassword(s.PasswordFile)
				if err != nil {
					return nil, err
				}
				cp.Password, cp.PasswordFlag = pw, true
			}
			// No MaximumPacketSize: a broker silently discards messages larger than the client's
			// maximum as if they were delivered [MQTT-3.1.2-25].
			if s.SATAuthFile != "" {
				token, err := readToken(s.SATAuthFile)
				if err != nil {
					return nil, err
				}
				cp.Properties.AuthMethod = SATAuthMethod
				cp.Properties.AuthData = token
				c.mu.Lock()
				c.lastToken = token
				c.mu.Unlock()
			}
			return cp, nil
		},
		OnConnectionUp: func(cm *autopaho.ConnectionManager, ca *paho.Connack) {
			c.onUp(ca)
			if o.OnConnectionUp != nil {
				o.OnConnectionUp(cm, ca)
			}
			c.firstUpOnce.Do(func() { close(c.firstUp) })
		},
		OnConnectionDown: func() bool {
			c.connected.Store(false)
			if q := c.acks.Load(); q != nil {
				q.close(false) // the broker redelivers what was not acknowledged on the next connection
			}
			if c.closing.Load() {
				return false
			}
			c.log.Warnf("mqtt: connection to %s lost; reconnecting with backoff", u.Redacted())
			if o.OnConnectionDown != nil {
				o.OnConnectionDown()
			}
			return true
		},
		OnConnectError: func(err error) {
			c.mu.Lock()
			c.lastErr = err
			c.mu.Unlock()
			if !c.connected.Load() && c.connects.Load() > 0 {
				c.log.Warnf("mqtt: reconnecting to %s: %v", u.Redacted(), err)
			}
			var ce *autopaho.ConnackError
			if errors.As(err, &ce) && permanentConnack(ce.ReasonCode) {
				select {
				case firstErr <- err:
				default:
				}
			}
		},
		ClientConfig: paho.ClientConfig{
			ClientID: clientID,
		},
	}
	if o.NoSession {
		// No session outlives a connection, so the copy of every QoS 1 PUBLISH that paho's memory
		// store keeps for a resend is never read: noResendStore keeps none.
		cfg.Session = state.New(noResendStore{}, noResendStore{})
	}
	var sess session.SessionManager
	if o.ManualAcks {
		if o.OnPublish == nil {
			return nil, errors.New("mqttconn: Options.ManualAcks needs Options.OnPublish, whose Received.Ack sends each acknowledgement; OnPublishReceived cannot acknowledge")
		}
		// paho acknowledges each message when OnPublish returns, through a session whose Ack does
		// nothing: the connection's ackQueue sends the acks the caller made ready (see acks.go).
		sess = state.NewInMemory()
		if o.NoSession {
			sess = state.New(noResendStore{}, noResendStore{})
		}
		cfg.Session = deferAckSession{SessionManager: sess}
	}
	if o.OnPublishReceived != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){o.OnPublishReceived}
	}
	if o.OnPublish != nil {
		cfg.AttemptConnection = func(ctx context.Context, cc autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
			t := newSubIDTap()
			c.tap.Store(t) // the previous connection's client has shut down (autopaho waits for it)
			nc, err := attempt(ctx, cc, u, t)
			if o.ManualAcks {
				var q *ackQueue
				if err == nil {
					q = newAckQueue(nc, sess, c.ackFlush)
				}
				if old := c.acks.Swap(q); old != nil {
					old.close(false)
				}
			}
			return nc, err
		}
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			ids, ok := c.tap.Load().take(pr.Packet)
			if !ok {
				c.log.Warnf("mqtt: subscription identifiers of a PUBLISH on %q not decoded; using paho's", pr.Packet.Topic)
				if pp := pr.Packet.Properties; pp != nil && pp.SubscriptionIdentifier != nil {
					ids = []int{*pp.SubscriptionIdentifier}
				}
			}
			rc := Received{PublishReceived: pr, SubscriptionIDs: ids}
			if q := c.acks.Load(); q != nil && pr.Packet.QoS > 0 {
				rc.Ack = q.add(pr.Packet.PacketID, pr.Packet.QoS)
			}
			o.OnPublish(rc)
			return true, nil
		}}
	} else {
		cfg.AttemptConnection = func(ctx context.Context, cc autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
			conn, err := attempt(ctx, cc, u, nil) // buffered reads (bufferedTCPConn), coalesced writes
			if cc, ok := conn.(*coalescingConn); ok {
				cc.deferAcks = o.DeferAcks
			}
			return conn, err
		}
	}
	if s.SATAuthFile != "" {
		cfg.AuthHandler = satAuther{file: s.SATAuthFile}
	}

	cmCtx, cancel := context.WithCancel(context.Background())
	cm, err := autopaho.NewConnection(cmCtx, cfg)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%w at %s: %v", ErrConnect, u.Redacted(), err)
	}
	c.cm, c.cancel = cm, cancel

	wctx, wcancel := context.WithTimeout(ctx, s.ConnectTimeout)
	defer wcancel()
	awaited := make(chan error, 1)
	go func() {
		err := cm.AwaitConnection(wctx)
		if err == nil {
			// autopaho releases AwaitConnection before it calls OnConnectionUp: wait for the
			// callbacks, so that what the CONNACK said (MaxPacketSize, ...) is in place on return.
			select {
			case <-c.firstUp:
			case <-wctx.Done():
				err = wctx.Err()
			}
		}
		awaited <- err
	}()
	select {
	case err = <-awaited:
	case err = <-firstErr:
		wcancel()
		<-awaited
	}
	if err != nil {
		cancel()
		<-cm.Done()
		if q := c.acks.Load(); q != nil {
			q.close(false)
		}
		return nil, c.connectError(err)
	}

	if s.SATAuthFile != "" {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.watchToken(cmCtx, cm)
		}()
	}
	return c, nil
}

func (c *Conn) connectError(err error) error {
	var ce *autopaho.ConnackError
	if errors.As(err, &ce) {
		msg := fmt.Sprintf("%v: broker at %s refused the connection: reason %s", ErrConnect, c.url.Redacted(), ReasonString(ce.ReasonCode))
		if ce.Reason != "" {
			msg += " (" + ce.Reason + ")"
		}
		switch ce.ReasonCode {
		case 0x86, 0x87:
			msg += "; check username/password, satAuthFile or the client certificate"
		case 0x85:
			msg += "; check consumerID/clientID"
		}
		return fmt.Errorf("%s: %w", msg, ErrConnect)
	}
	c.mu.Lock()
	last := c.lastErr
	c.mu.Unlock()
	if last == nil {
		last = err
	}
	return fmt.Errorf("%w at %s within %s (connectTimeout): %v", ErrConnect, c.url.Redacted(), c.settings.ConnectTimeout, last)
}

func (c *Conn) onUp(ca *paho.Connack) {
	c.connects.Add(1)
	var maxPacket uint32
	if ca.Properties != nil && ca.Properties.MaximumPacketSize != nil {
		maxPacket = *ca.Properties.MaximumPacketSize
	}
	c.maxPacketSize.Store(maxPacket)
	c.connected.Store(true)
	if ca.SessionPresent && c.noSession {
		// [MQTT-3.2.2-2]: a broker accepting Clean Start 1 must answer Session Present 0.
		c.log.Errorf("mqtt: the broker at %s answered Session Present 1 to a clean start of client %q (a protocol violation, MQTT-3.2.2-2)", c.url.Redacted(), c.clientID)
	}
	if !ca.SessionPresent && c.connects.Load() > 1 && !c.noSession {
		c.log.Warnf("mqtt: the broker had no session for client %q (expired or broker state lost): messages queued for the old session are gone from the broker", c.clientID)
	}
	c.log.Infof("mqtt: connected to %s as %q (session present: %v)", c.url.Redacted(), c.clientID, ca.SessionPresent)
}

// Manager returns the underlying autopaho connection manager.
func (c *Conn) Manager() *autopaho.ConnectionManager { return c.cm }

// ClientID is the MQTT client id in use.
func (c *Conn) ClientID() string { return c.clientID }

// URL is the broker address (without credentials).
func (c *Conn) URL() *url.URL { return c.url }

// Connected reports whether a connection is currently up.
func (c *Conn) Connected() bool { return c.connected.Load() }

// MaxPacketSize is the broker's Maximum Packet Size from the last CONNACK, 0 when it gave none.
func (c *Conn) MaxPacketSize() uint32 { return c.maxPacketSize.Load() }

// Connects counts successful connections (the first one and every reconnection).
func (c *Conn) Connects() uint64 { return c.connects.Load() }

// Reauthentications counts successful in-connection re-authentications.
func (c *Conn) Reauthentications() uint64 { return c.reauths.Load() }

// Close disconnects cleanly (DISCONNECT with reason 0, so no will message and the session is
// kept for its expiry interval) and waits for the connection's goroutines. Safe to call twice.
func (c *Conn) Close(ctx context.Context) error {
	if c == nil || c.cm == nil {
		return nil
	}
	c.closing.Store(true)
	// Send the acknowledgements made ready before Close, or their messages would be redelivered
	// to the next session.
	if q := c.acks.Load(); q != nil {
		q.close(true)
	}
	err := c.cm.Disconnect(ctx)
	c.cancel()
	select {
	case <-c.cm.Done():
	case <-ctx.Done():
		err = errors.Join(err, ctx.Err())
	}
	c.wg.Wait()
	if errors.Is(err, autopaho.ConnectionDownError) {
		err = nil
	}
	return err
}

// sessionExpiry is the Session Expiry Interval sent in CONNECT (0 is not sent: the default).
func sessionExpiry(s Settings, noSession bool) uint32 {
	if noSession {
		return 0
	}
	return uint32(s.SessionExpiry / time.Second)
}

func minDuration(a, b time.Duration) time.Duration {
	if a < b {
		return a
	}
	return b
}

type nopLogger struct{}

func (nopLogger) Debugf(string, ...any) {}
func (nopLogger) Infof(string, ...any)  {}
func (nopLogger) Warnf(string, ...any)  {}
func (nopLogger) Errorf(string, ...any) {}

// NotSent reports whether err from a publish or subscribe means the request never left the client
// because no connection was up (autopaho's ConnectionDownError, or paho's session refusing it
// between connections; paho rewinds the request then), so it is safe to wait for the connection
// and send again without risking a duplicate.
func NotSent(err error) bool {
	return errors.Is(err, autopaho.ConnectionDownError) || errors.Is(err, session.ErrNoConnection)
}
