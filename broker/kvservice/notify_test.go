package kvservice

import (
	"context"
	"encoding/hex"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/statestore"
)

// notifyFilter is the filter of every notification topic of clientID
// (docs/state-store-protocol.md#topics, #notifications).
func notifyFilter(clientID string) string {
	return statestore.NotifyTopicPrefix + "/" + strings.ToUpper(hex.EncodeToString([]byte(clientID))) + "/command/notify/+"
}

const (
	notifySetABC = "*4\r\n$6\r\nNOTIFY\r\n$3\r\nSET\r\n$5\r\nVALUE\r\n$3\r\nabc\r\n"
	notifyDelete = "*2\r\n$6\r\nNOTIFY\r\n$6\r\nDELETE\r\n"
)

// publishQoS1 publishes at QoS 1 and returns the PUBACK reason code (paho returns a failure code
// with an error and the PUBACK).
func (c *client) publishQoS1(t *testing.T, topic, payload string) byte {
	t.Helper()
	r, err := c.Publish(ctxT(t), &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)})
	if r == nil {
		require.NoError(t, err)
	}
	return r.ReasonCode
}

// until returns every publish received before the first one on topic (which it consumes).
func (c *client) until(t *testing.T, topic string) []*paho.Publish {
	t.Helper()
	var got []*paho.Publish
	for {
		p := c.next(t)
		if p.Topic == topic {
			return got
		}
		got = append(got, p)
	}
}

// The AIO Go SDK never subscribes to its notification topic, yet receives notifications from the
// AIO broker: a notification goes to the registering client's connection whether or not it
// subscribed (issue 8 item 6), QoS 1, for SET, DEL and a TTL expiry.
func TestNotificationReachesUnsubscribedWatcher(t *testing.T) {
	f := newFixture(t)
	w := f.dial(t, "sdk-like")
	w.subscribe(t, responseTopic("sdk-like")) // the response topic only, as the SDK's invoker does
	require.Equal(t, "+OK\r\n", string(w.call(t, "*2\r\n$9\r\nKEYNOTIFY\r\n$7\r\nSOMEKEY\r\n", "__ts", ts0).Payload))

	other := f.dial(t, "other")
	other.subscribe(t, responseTopic("other"))
	other.call(t, "*3\r\n$3\r\nSET\r\n$7\r\nSOMEKEY\r\n$3\r\nabc\r\n", "__ts", ts0)
	n := w.next(t)
	require.Equal(t, statestore.NotifyTopic("sdk-like", []byte("SOMEKEY")), n.Topic)
	require.Equal(t, notifySetABC, string(n.Payload))
	require.Equal(t, byte(1), n.QoS)
	require.Equal(t, "application/octet-stream", n.Properties.ContentType)
	require.Equal(t, "1.0", n.Properties.User.Get("__protVer"))

	other.call(t, "*2\r\n$3\r\nDEL\r\n$7\r\nSOMEKEY\r\n", "__ts", ts0)
	require.Equal(t, notifyDelete, string(w.next(t).Payload))

	other.call(t, "*5\r\n$3\r\nSET\r\n$7\r\nSOMEKEY\r\n$3\r\nabc\r\n$2\r\nPX\r\n$3\r\n100\r\n", "__ts", ts0)
	require.Equal(t, notifySetABC, string(w.next(t).Payload))
	require.Equal(t, notifyDelete, string(w.next(t).Payload)) // sent by the expiry timer
}

// A client that subscribed to its notification filter (as
// docs/state-store-protocol.md#notifications suggests) gets each notification once, not once per
// delivery path.
func TestNotificationOnceToSubscribedWatcher(t *testing.T) {
	f := newFixture(t)
	w := f.dial(t, "watcher")
	w.subscribe(t, responseTopic("watcher"))
	w.subscribe(t, notifyFilter("watcher"))
	w.subscribe(t, "clients/#") // an overlapping wildcard of its own
	w.subscribe(t, "done/watcher")
	w.call(t, "*2\r\n$9\r\nKEYNOTIFY\r\n$1\r\nk\r\n", "__ts", ts0)

	other := f.dial(t, "other")
	other.subscribe(t, responseTopic("other"))
	other.call(t, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\n", "__ts", ts0)
	other.call(t, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv2\r\n", "__ts", ts0)
	// Messages of one session are sent in order: a second copy of v1 would come before v2.
	topic := statestore.NotifyTopic("watcher", []byte("k"))
	var payloads []string
	for len(payloads) < 2 {
		p := w.next(t)
		if p.Topic == topic {
			payloads = append(payloads, string(p.Payload))
		}
	}
	require.Equal(t, []string{
		"*4\r\n$6\r\nNOTIFY\r\n$3\r\nSET\r\n$5\r\nVALUE\r\n$2\r\nv1\r\n",
		"*4\r\n$6\r\nNOTIFY\r\n$3\r\nSET\r\n$5\r\nVALUE\r\n$2\r\nv2\r\n",
	}, payloads)
	w.publishQoS1(t, "done/watcher", "")
	for _, p := range w.until(t, "done/watcher") {
		require.NotEqual(t, topic, p.Topic, "a second copy of a notification")
	}
}

// No other client receives a notification, whatever it subscribes to ('#' included).
func TestNotificationsNeverReachOtherClients(t *testing.T) {
	f := newFixture(t)
	w := f.dial(t, "watcher")
	w.subscribe(t, responseTopic("watcher"))
	w.call(t, "*2\r\n$9\r\nKEYNOTIFY\r\n$1\r\nk\r\n", "__ts", ts0)

	spy := f.dial(t, "spy")
	for _, filter := range []string{"#", "clients/#", "+/statestore/#", notifyFilter("watcher"), statestore.NotifyTopic("watcher", []byte("k"))} {
		spy.subscribe(t, filter)
	}
	setter := f.dial(t, "setter")
	setter.subscribe(t, responseTopic("setter"))
	setter.call(t, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nabc\r\n", "__ts", ts0)
	setter.call(t, "*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n", "__ts", ts0)
	// Everything routed to the spy before its own marker came before the marker.
	spy.publishQoS1(t, "marker/spy", "")
	for _, p := range spy.until(t, "marker/spy") {
		require.False(t, strings.HasPrefix(p.Topic, statestore.NotifyTopicPrefix), "the spy received %q", p.Topic)
	}
	require.Equal(t, notifySetABC, string(w.next(t).Payload))
	require.Equal(t, notifyDelete, string(w.next(t).Payload))
}

// A client cannot publish under the notification prefix (a forged notification): QoS 1 is
// refused with PUBACK 0x87, and neither QoS 1 nor QoS 0 reaches a subscriber.
func TestClientPublishUnderNotifyPrefixRefused(t *testing.T) {
	f := newFixture(t)
	victim := f.dial(t, "victim")
	victim.subscribe(t, notifyFilter("victim"))
	victim.subscribe(t, "marker/victim")
	forger := f.dial(t, "forger")
	forged := statestore.NotifyTopic("victim", []byte("k"))

	require.Equal(t, byte(0x87), forger.publishQoS1(t, forged, notifyDelete))
	require.Equal(t, byte(0x87), forger.publishQoS1(t, statestore.NotifyTopicPrefix, notifyDelete))
	_, err := forger.Publish(ctxT(t), &paho.Publish{Topic: forged, QoS: 0, Payload: []byte(notifyDelete)})
	require.NoError(t, err)
	require.Equal(t, byte(0), forger.publishQoS1(t, "marker/victim", ""))
	require.Empty(t, victim.until(t, "marker/victim"))
}

// gateObserver blocks the first ClientDisconnected of client id until release is closed.
type gateObserver struct {
	id      string
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (*gateObserver) Match(string) bool { return false }
func (*gateObserver) Handle(context.Context, string, *broker.Message, broker.Publisher) error {
	return nil
}

func (g *gateObserver) ClientDisconnected(id string) {
	if id != g.id {
		return
	}
	first := false
	g.once.Do(func() { first = true })
	if first {
		close(g.entered)
		<-g.release
	}
}

// doneObserver, placed after the key-value Service, tells when the broker has told every service
// that the first connection of client id ended.
type doneObserver struct {
	id   string
	once sync.Once
	done chan struct{}
}

func (*doneObserver) Match(string) bool { return false }
func (*doneObserver) Handle(context.Context, string, *broker.Message, broker.Publisher) error {
	return nil
}

func (o *doneObserver) ClientDisconnected(id string) {
	if id == o.id {
		o.once.Do(func() { close(o.done) })
	}
}

// A KEYNOTIFY made by a client's new connection survives the end of its previous connection being
// reported late (issue 8 item 11): registrations belong to the connection that made them.
func TestKeyNotifyAfterReconnectSurvivesOldDisconnect(t *testing.T) {
	gate := &gateObserver{id: "watcher", entered: make(chan struct{}), release: make(chan struct{})}
	after := &doneObserver{id: "watcher", done: make(chan struct{})}
	f := newFixtureWith(t, func(svc *Service) []broker.Service { return []broker.Service{gate, svc, after} })
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(gate.release) }) }
	t.Cleanup(release)

	w1 := f.dial(t, "watcher")
	w1.subscribe(t, responseTopic("watcher"))
	w1.call(t, "*2\r\n$9\r\nKEYNOTIFY\r\n$1\r\nk\r\n", "__ts", ts0)
	require.NoError(t, w1.Disconnect(&paho.Disconnect{ReasonCode: 0}))
	select {
	case <-gate.entered: // the first connection's end is being reported
	case <-time.After(waitFor):
		t.Fatal("the end of the first connection was not reported")
	}

	w2 := f.dial(t, "watcher")
	w2.subscribe(t, responseTopic("watcher"))
	w2.subscribe(t, notifyFilter("watcher")) // so that this test does not depend on item 6's delivery
	require.Equal(t, "+OK\r\n", string(w2.call(t, "*2\r\n$9\r\nKEYNOTIFY\r\n$1\r\nk\r\n", "__ts", ts0).Payload))
	release()
	select {
	case <-after.done:
	case <-time.After(waitFor):
		t.Fatal("the end of the first connection was not reported to every service")
	}
	require.True(t, f.engine.Watching("watcher", []byte("k")), "the new connection's registration was dropped")

	setter := f.dial(t, "setter")
	setter.subscribe(t, responseTopic("setter"))
	setter.call(t, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nabc\r\n", "__ts", ts0)
	n := w2.next(t)
	require.Equal(t, statestore.NotifyTopic("watcher", []byte("k")), n.Topic)
	require.Equal(t, notifySetABC, string(n.Payload))
}

// publishOnly is a Publisher that cannot deliver to one connection.
type publishOnly struct{}

func (publishOnly) Publish(context.Context, *broker.Message) error { return nil }

// Notifications must never fall back to routing: Start refuses a Publisher that is not a
// broker.Deliverer.
func TestStartNeedsDeliverer(t *testing.T) {
	engine, err := statestore.NewEngine(statestore.NewDefaultOptions())
	require.NoError(t, err)
	svc, err := New(Options{Engine: engine})
	require.NoError(t, err)
	require.ErrorIs(t, svc.Start(publishOnly{}), ErrNoDeliverer)
	require.NoError(t, svc.Close())
	require.NoError(t, engine.Close())
}

// A CONNECT with a connected client's ID that the broker then refuses (here: the connection limit,
// 0x97, checked after authentication) leaves the connected client's registrations alone: they
// belong to its connection, which goes on.
func TestRefusedConnectKeepsLiveRegistrations(t *testing.T) {
	f := newFixture(t, func(_ *statestore.Options, o *broker.Options) { o.MaxConnections = 1 })
	w := f.dial(t, "watcher")
	w.subscribe(t, responseTopic("watcher"))
	w.call(t, "*2\r\n$9\r\nKEYNOTIFY\r\n$1\r\nk\r\n", "__ts", ts0)

	nc, err := net.Dial("tcp", f.b.Addrs()[0])
	require.NoError(t, err)
	second := paho.NewClient(paho.ClientConfig{ClientID: "watcher", Conn: nc, OnClientError: func(error) {}})
	ca, _ := second.Connect(ctxT(t), &paho.Connect{ClientID: "watcher", KeepAlive: 30, CleanStart: true})
	require.NotNil(t, ca)
	require.Equal(t, broker.CodeQuotaExceeded, ca.ReasonCode)
	nc.Close()
	<-second.Done()

	require.True(t, f.engine.Watching("watcher", []byte("k")), "the live connection's registration was dropped")
	w.call(t, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nabc\r\n", "__ts", ts0) // the writer watches too
	n := w.next(t)
	require.Equal(t, statestore.NotifyTopic("watcher", []byte("k")), n.Topic)
}
