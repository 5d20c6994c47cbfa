package kvservice

import (
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/broker/statestore"
	"github.com/mqdapr/mqdapr/internal/hlc"
)

const ts0 = "001696374425000:00000:app1-node"

func version(t *testing.T, p *paho.Publish) hlc.HLC {
	t.Helper()
	v, err := hlc.Parse(p.Properties.User.Get("__ts"))
	require.NoError(t, err)
	return v
}

// docs/state-store-protocol.md#example-acquire-and-renew-a-lock, #example-get and #example-vdel
// over TCP, byte-exact modulo timestamps: lock with SET NX PX, a second SET NX fails with the
// stored version, GET hit and miss, renewal with NEX, VDEL.
func TestSpecExamplesLockGetVdel(t *testing.T) {
	f := newFixture(t)
	app1 := f.dial(t, "app1")
	app1.subscribe(t, responseTopic("app1"))
	app2 := f.dial(t, "app2")
	app2.subscribe(t, responseTopic("app2"))

	setNX := "*6\r\n$3\r\nSET\r\n$4\r\nlock\r\n$7\r\nclient1\r\n$2\r\nNX\r\n$2\r\nPX\r\n$5\r\n10000\r\n"
	require.Len(t, setNX, 63)
	r := app1.call(t, setNX, "__ts", ts0, "__protVer", "1.0")
	require.Equal(t, "+OK\r\n", string(r.Payload))
	require.Equal(t, "application/octet-stream", r.Properties.ContentType)
	require.Equal(t, "1.0", r.Properties.User.Get("__protVer"))
	lockVersion := version(t, r)
	require.Equal(t, "store-node", lockVersion.NodeID)

	r = app2.call(t, setNX, "__ts", ts0)
	require.Equal(t, ":-1\r\n", string(r.Payload))
	require.Equal(t, lockVersion, version(t, r))

	get := "*2\r\n$3\r\nGET\r\n$4\r\nlock\r\n"
	require.Len(t, get, 23)
	r = app2.call(t, get, "__ts", ts0)
	require.Equal(t, "$7\r\nclient1\r\n", string(r.Payload))
	require.Equal(t, lockVersion, version(t, r))

	renew := "*6\r\n$3\r\nSET\r\n$4\r\nlock\r\n$7\r\nclient1\r\n$3\r\nNEX\r\n$2\r\nPX\r\n$5\r\n10000\r\n"
	require.Len(t, renew, 64)
	r = app1.call(t, renew, "__ts", ts0)
	require.Equal(t, "+OK\r\n", string(r.Payload))
	require.Positive(t, version(t, r).Compare(lockVersion))

	r = app2.call(t, "*3\r\n$4\r\nVDEL\r\n$4\r\nlock\r\n$7\r\nclient2\r\n", "__ts", ts0)
	require.Equal(t, ":-1\r\n", string(r.Payload))
	r = app1.call(t, "*3\r\n$4\r\nVDEL\r\n$4\r\nlock\r\n$7\r\nclient1\r\n", "__ts", ts0)
	require.Equal(t, ":1\r\n", string(r.Payload))
	r = app1.call(t, "*3\r\n$4\r\nVDEL\r\n$4\r\nlock\r\n$7\r\nclient1\r\n", "__ts", ts0)
	require.Equal(t, ":0\r\n", string(r.Payload))

	r = app2.call(t, get, "__ts", ts0)
	require.Equal(t, "$-1\r\n", string(r.Payload))
	require.Empty(t, r.Properties.User.Get("__ts"))
}

// docs/state-store-protocol.md#example-fenced-del: a fenced key refuses a DEL without __ft, in band
// with status 200.
func TestSpecExampleFencedDel(t *testing.T) {
	f := newFixture(t)
	c := f.dial(t, "app1")
	c.subscribe(t, responseTopic("app1"))
	r := c.call(t, "*4\r\n$3\r\nSET\r\n$4\r\nlock\r\n$1\r\nx\r\n$2\r\nNX\r\n", "__ts", ts0)
	ft := r.Properties.User.Get("__ts")
	r = c.call(t, "*3\r\n$3\r\nSET\r\n$9\r\nprotected\r\n$1\r\nv\r\n", "__ts", ts0, "__ft", ft)
	require.Equal(t, "+OK\r\n", string(r.Payload))
	del := "*2\r\n$3\r\nDEL\r\n$9\r\nprotected\r\n"
	r = c.call(t, del, "__ts", ts0)
	require.Equal(t, "-ERR "+statestore.MsgFencingRequired+"\r\n", string(r.Payload))
	r = c.call(t, del, "__ts", ts0, "__ft", ft)
	require.Equal(t, ":1\r\n", string(r.Payload))
	r = c.call(t, del, "__ts", ts0, "__ft", ft)
	require.Equal(t, ":0\r\n", string(r.Payload))
	r = c.call(t, "*2\r\n$3\r\nget\r\n$1\r\nk\r\n", "__ts", ts0)
	require.Equal(t, "-ERR unknown command\r\n", string(r.Payload))
	r = c.call(t, "*2\r\n$3\r\nGET\r\n", "__ts", ts0)
	require.Equal(t, "-ERR syntax error\r\n", string(r.Payload))
}

// docs/state-store-protocol.md#example-keynotify-and-notifications: KEYNOTIFY, a SET notification
// on the exact topic, and the DELETE notification of a TTL expiry sent by the Service's timer with
// no further request.
func TestSpecExampleKeynotifyAndExpiry(t *testing.T) {
	f := newFixture(t)
	w := f.dial(t, "client-id1")
	w.subscribe(t, responseTopic("client-id1"))
	w.subscribe(t, "clients/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/636C69656E742D696431/command/notify/+")
	r := w.call(t, "*2\r\n$9\r\nKEYNOTIFY\r\n$7\r\nSOMEKEY\r\n", "__ts", ts0)
	require.Equal(t, "+OK\r\n", string(r.Payload))

	other := f.dial(t, "other")
	other.subscribe(t, responseTopic("other"))
	r = other.call(t, "*5\r\n$3\r\nSET\r\n$7\r\nSOMEKEY\r\n$3\r\nabc\r\n$2\r\nPX\r\n$3\r\n200\r\n", "__ts", ts0)
	require.Equal(t, "+OK\r\n", string(r.Payload))
	setVersion := version(t, r)

	n := w.next(t)
	require.Equal(t, "clients/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/636C69656E742D696431/command/notify/534F4D454B4559", n.Topic)
	require.Equal(t, "*4\r\n$6\r\nNOTIFY\r\n$3\r\nSET\r\n$5\r\nVALUE\r\n$3\r\nabc\r\n", string(n.Payload))
	require.Equal(t, setVersion, version(t, n))
	require.Equal(t, byte(1), n.QoS)

	n = w.next(t) // sent by the expiry timer: nobody sends a request meanwhile
	require.Equal(t, "*2\r\n$6\r\nNOTIFY\r\n$6\r\nDELETE\r\n", string(n.Payload))
	require.Equal(t, setVersion, version(t, n))
	require.Zero(t, f.engine.Len())

	r = w.call(t, "*3\r\n$9\r\nKEYNOTIFY\r\n$7\r\nSOMEKEY\r\n$4\r\nSTOP\r\n", "__ts", ts0)
	require.Equal(t, "+OK\r\n", string(r.Payload))
	r = w.call(t, "*3\r\n$9\r\nKEYNOTIFY\r\n$7\r\nSOMEKEY\r\n$4\r\nSTOP\r\n", "__ts", ts0)
	require.Equal(t, ":0\r\n", string(r.Payload))
}

// A TTL set after a longer one moves the timer earlier; both keys expire in deadline order.
func TestExpiryTimerRearms(t *testing.T) {
	f := newFixture(t)
	c := f.dial(t, "app1")
	c.subscribe(t, responseTopic("app1"))
	c.call(t, "*5\r\n$3\r\nSET\r\n$4\r\nslow\r\n$1\r\nv\r\n$2\r\nPX\r\n$6\r\n600000\r\n", "__ts", ts0)
	c.call(t, "*5\r\n$3\r\nSET\r\n$4\r\nfast\r\n$1\r\nv\r\n$2\r\nPX\r\n$2\r\n50\r\n", "__ts", ts0)
	require.Eventually(t, func() bool { return f.engine.Len() == 1 }, waitFor, 10*time.Millisecond)
	d, ok := f.engine.NextDeadline()
	require.True(t, ok)
	require.Greater(t, time.Until(d), time.Minute)
}

// A forbidden response topic (the request topic, or under the notification prefix) disconnects the
// client (docs/state-store-protocol.md#topics), with DISCONNECT 0x82 protocol error, and nothing is
// answered.
func TestForbiddenResponseTopicDisconnects(t *testing.T) {
	f := newFixture(t)
	get := []byte("*2\r\n$3\r\nGET\r\n$4\r\nlock\r\n")
	for name, rt := range map[string]string{
		"notification prefix": statestore.NotifyTopicPrefix + "/x",
		"request topic":       statestore.RequestTopic,
	} {
		// No PUBACK comes: do not let the publish wait paho's default 10 s.
		c := f.dial(t, "bad-"+strings.ReplaceAll(name, " ", "-"), func(cfg *paho.ClientConfig) { cfg.PacketTimeout = 200 * time.Millisecond })
		_, _ = c.Publish(ctxT(t), &paho.Publish{Topic: statestore.RequestTopic, QoS: 1, Payload: get,
			Properties: &paho.PublishProperties{ResponseTopic: rt, CorrelationData: []byte("0123456789abcdef")}})
		select {
		case code := <-c.disconnected:
			require.Equal(t, byte(0x82), code, name)
		case <-time.After(waitFor):
			t.Fatalf("%s: not disconnected", name)
		}
		<-c.Done()
	}
}

// Requests the protocol does not answer are refused in the PUBACK (0x83) with no response.
func TestUnanswerableRequestsRefused(t *testing.T) {
	f := newFixture(t)
	c := f.dial(t, "app1")
	c.subscribe(t, responseTopic("app1"))
	get := []byte("*2\r\n$3\r\nGET\r\n$4\r\nlock\r\n")
	for name, props := range map[string]*paho.PublishProperties{
		"no correlation data": {ResponseTopic: responseTopic("app1")},
		"no response topic":   {CorrelationData: []byte("0123456789abcdef")},
	} {
		r, err := c.Publish(ctxT(t), &paho.Publish{Topic: statestore.RequestTopic, QoS: 1, Payload: get, Properties: props})
		require.Error(t, err, name)
		require.NotNil(t, r, name)
		require.Equal(t, byte(0x83), r.ReasonCode, name)
	}
	r := c.call(t, string(get), "__ts", ts0) // the connection is still usable and nothing else came
	require.Equal(t, "$-1\r\n", string(r.Payload))
	require.Empty(t, c.msgs)
}

// A new connection that takes a live session over ends the old connection's KEYNOTIFY
// registrations, and nothing registered by the old one is sent to the new one.
func TestTakeoverDropsRegistrations(t *testing.T) {
	f := newFixture(t)
	w := f.dial(t, "watcher")
	w.subscribe(t, responseTopic("watcher"))
	w.call(t, "*2\r\n$9\r\nKEYNOTIFY\r\n$1\r\nk\r\n", "__ts", ts0)
	require.True(t, f.engine.Watching("watcher", []byte("k")))
	w2 := f.dial(t, "watcher") // takeover: w is still connected
	w2.subscribe(t, "marker/watcher")
	require.Eventually(t, func() bool { return !f.engine.Watching("watcher", []byte("k")) }, waitFor, 5*time.Millisecond)

	other := f.dial(t, "other")
	other.subscribe(t, responseTopic("other"))
	other.call(t, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nabc\r\n", "__ts", ts0)
	require.Equal(t, byte(0), other.publishQoS1(t, "marker/watcher", ""))
	require.Empty(t, w2.until(t, "marker/watcher"))
}

// Close stops the timer goroutine (goleak checks it) and later requests are refused with 0x80.
func TestCloseRefusesRequests(t *testing.T) {
	f := newFixture(t)
	c := f.dial(t, "app1")
	require.NoError(t, f.svc.Close())
	require.NoError(t, f.svc.Close())
	require.ErrorIs(t, f.svc.Start(f.b), ErrClosed)
	require.Equal(t, byte(0x80), c.request(t, "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", []byte("0123456789abcdef")))
}

func TestNewValidates(t *testing.T) {
	_, err := New(Options{})
	require.ErrorIs(t, err, ErrInvalidOptions)
}

// When a client's connection ends, its KEYNOTIFY registrations are dropped at once
// (docs/state-store-protocol.md#notifications).
func TestDisconnectDropsRegistrations(t *testing.T) {
	f := newFixture(t)
	w := f.dial(t, "watcher")
	w.subscribe(t, responseTopic("watcher"))
	w.call(t, "*2\r\n$9\r\nKEYNOTIFY\r\n$1\r\nk\r\n", "__ts", ts0)
	require.True(t, f.engine.Watching("watcher", []byte("k")))
	_ = w.Disconnect(&paho.Disconnect{ReasonCode: 0})
	require.Eventually(t, func() bool { return !f.engine.Watching("watcher", []byte("k")) }, waitFor, 5*time.Millisecond)
}
