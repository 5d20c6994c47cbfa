// Package statekv is a Dapr state store over the key-value store built into MQTT v5 brokers that
// speak the Azure IoT Operations "state store" protocol (docs/state-store-protocol.md):
// mqdapr's own broker with broker/kvservice, or AIO's broker. It is served as the pluggable
// component "state.mqttkv".
//
// ETags are the keys' versions (`__ts`). An ETag write is a compare-and-set built from a lease lock
// and the key's fencing token (DESIGN.md); writes without an ETag are last-write-wins, first-write
// maps to NX and ttlInSeconds to PX. Transactions and queries are not offered (the protocol has no
// multi-key operation).
package statekv

import (
	"context"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/dapr/components-contrib/state"
	"github.com/dapr/kit/logger"
	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/mqdapr/mqdapr/internal/mqttconn"
)

// ComponentName is the pluggable component's name: its socket is mqttkv.sock and its type in a
// Component YAML is state.mqttkv.
const ComponentName = "mqttkv"

// ackDelay is how long the PUBACK of a response may wait for the next request, to share its
// system call (DESIGN.md, "Cost per request"). The broker lets 65535 responses wait for their
// PUBACK (the component sends no Receive Maximum), so nothing waits for it.
const ackDelay = time.Millisecond

// releaseWaitOnClose bounds how long Close waits for the locks being released before it closes
// the connection (which then ends those releases; their locks expire after lockTTL).
const releaseWaitOnClose = 2 * time.Second

// Store implements contrib's state.Store.
type Store struct {
	log logger.Logger

	mu     sync.Mutex // guards the fields below and the Init/Close transitions
	md     Metadata
	props  map[string]string
	conn   *mqttconn.Conn
	rpc    *rpc
	subs   *subscriber
	closed bool

	rmu       sync.Mutex               // guards releasing
	releasing map[string]chan struct{} // lock key → closed when this store's release of it is answered

	hooks testHooks // test seams, set before Init; zero in production

	m *storeMetrics // metrics.go
}

// New returns an uninitialised store. It does no I/O.
func New(log logger.Logger) *Store {
	if log == nil {
		log = logger.NewLogger("mqttkv-state")
	}
	return &Store{log: log, m: newStoreMetrics()}
}

// Init connects to the broker and subscribes to the response topic; it returns once requests can be
// answered. daprd calls Init again on the same instance when daprd restarts: with the same metadata
// that is a no-op; with different metadata the old connection is closed first.
func (s *Store) Init(ctx context.Context, meta state.Metadata) error {
	md, unknown, err := parseMetadata(meta.Properties)
	if err != nil {
		return err
	}
	for _, k := range unknown {
		s.log.Warnf("mqttkv state: unknown metadata key %q is ignored", k)
	}
	for k := range meta.Properties {
		if !strings.EqualFold(k, "sessionExpiry") {
			continue
		}
		s.log.Warnf("mqttkv state: metadata key \"sessionExpiry\" is ignored: the state store's connection has no session (clean start, session expiry 0), so that no request is re-sent after a reconnection")
	}
	clientID, err := md.Settings.ResolveClientID(mqttconn.KindState)
	if err != nil {
		return err
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		if reflect.DeepEqual(s.props, meta.Properties) && !s.closed {
			return nil
		}
		s.shutdownLocked()
	}
	r, err := newRPC(clientID, md.RequestTimeout, md.Persistent)
	if err != nil {
		return err
	}
	subs := newSubscriber(r, s.log)
	up := s.m.connectionUp() // metrics.go: reconnections
	conn, err := mqttconn.Dial(ctx, mqttconn.Options{
		Settings:          md.Settings,
		Kind:              mqttconn.KindState,
		NoSession:         true, // nothing is ever resent after a reconnection (DESIGN.md)
		DeferAcks:         ackDelay,
		OnPublishReceived: r.onPublish,
		OnConnectionUp: func(cm *autopaho.ConnectionManager, ca *paho.Connack) {
			up()
			subs.connected(cm, r.connectionUp(ca))
		},
		OnConnectionDown: r.connectionDown,
		Logger:           s.log,
	})
	if err != nil {
		subs.stop()
		r.close()
		return err
	}
	r.conn = conn
	if err := subs.wait(ctx, md.ConnectTimeout); err != nil {
		subs.stop()
		closeConn(conn, s.log)
		r.close()
		return err
	}
	s.md, s.props, s.conn, s.rpc, s.subs, s.closed = md, cloneMap(meta.Properties), conn, r, subs, false
	return nil
}

// Features advertises ETags and TTLs. Transactions are not offered.
func (s *Store) Features() []state.Feature {
	return []state.Feature{state.FeatureETag, state.FeatureTTL}
}

// Close disconnects. Later calls fail with ErrClosed. Safe to call more than once and after a
// failed Init.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shutdownLocked()
	s.closed = true
	return nil
}

func (s *Store) shutdownLocked() {
	// The locks being released go first, for at most releaseWaitOnClose; closing the connection
	// below ends the releases still waiting (their locks then expire after lockTTL).
	s.rmu.Lock()
	var releases []chan struct{}
	for _, done := range s.releasing {
		releases = append(releases, done)
	}
	s.rmu.Unlock()
	t := time.NewTimer(releaseWaitOnClose)
	for _, done := range releases {
		select {
		case <-done:
		case <-t.C:
		}
	}
	t.Stop()
	defer func() {
		for _, done := range releases {
			<-done
		}
	}()
	if s.subs != nil {
		s.subs.stop()
	}
	if s.conn != nil {
		closeConn(s.conn, s.log)
	}
	if s.rpc != nil {
		s.rpc.close()
	}
	s.conn, s.rpc, s.subs = nil, nil, nil
}

func closeConn(c *mqttconn.Conn, log logger.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		log.Warnf("mqttkv state: disconnect: %v", err)
	}
}

// state returns the live client or the error for calls made before Init / after Close.
func (s *Store) state() (*rpc, Metadata, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rpc == nil {
		if s.closed {
			return nil, s.md, ErrClosed
		}
		return nil, s.md, ErrNotInitialized
	}
	return s.rpc, s.md, nil
}

// ClientID returns the MQTT client id in use ("" before Init).
func (s *Store) ClientID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rpc == nil {
		return ""
	}
	return s.rpc.clientID
}

func cloneMap(m map[string]string) map[string]string {
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
