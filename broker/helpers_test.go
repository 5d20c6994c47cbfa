package broker

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitFor = 10 * time.Second

// newBroker starts a broker on 127.0.0.1:0, closed at the end of the test.
func newBroker(t testing.TB, mutate func(*Options)) *Broker {
	t.Helper()
	o := NewDefaultOptions()
	o.Addr = "127.0.0.1:0"
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if mutate != nil {
		mutate(o)
	}
	b, err := New(o)
	require.NoError(t, err)
	require.NoError(t, b.Start())
	t.Cleanup(func() { require.NoError(t, b.Close()) })
	return b
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

// client is a paho.golang client with its received publishes in msgs.
type client struct {
	*paho.Client
	msgs    chan *paho.Publish
	disc    chan *paho.Disconnect
	errs    chan error // client-side errors (paho's OnClientError), for diagnostics
	connack *paho.Connack
}

type clientOpt func(*paho.ClientConfig, *paho.Connect)

func withExpiry(secs uint32) clientOpt {
	return func(_ *paho.ClientConfig, c *paho.Connect) { c.Properties.SessionExpiryInterval = &secs }
}

func withReceiveMax(n uint16) clientOpt {
	return func(_ *paho.ClientConfig, c *paho.Connect) { c.Properties.ReceiveMaximum = &n }
}

func manualAcks() clientOpt {
	return func(cc *paho.ClientConfig, _ *paho.Connect) { cc.EnableManualAcknowledgment = true }
}

func resume() clientOpt {
	return func(_ *paho.ClientConfig, c *paho.Connect) { c.CleanStart = false }
}

// dialClient connects a paho client to b as id; the connection is closed at the end of the test.
func dialClient(t testing.TB, b *Broker, id string, opts ...clientOpt) *client {
	t.Helper()
	c, err := tryClient(t, b.Addrs()[0], id, opts...)
	require.NoError(t, err)
	require.Equal(t, CodeSuccess, c.connack.ReasonCode)
	return c
}

func tryClient(t testing.TB, addr, id string, opts ...clientOpt) (*client, error) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return clientOn(t, nc, id, opts...)
}

// clientOn runs a paho client over an established connection (e.g. TLS).
func clientOn(t testing.TB, nc net.Conn, id string, opts ...clientOpt) (*client, error) {
	t.Helper()
	cl := &client{msgs: make(chan *paho.Publish, 100000), disc: make(chan *paho.Disconnect, 1), errs: make(chan error, 16)}
	cc := paho.ClientConfig{
		ClientID: id,
		Conn:     nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			cl.msgs <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) { cl.disc <- d },
		OnClientError: func(err error) {
			select {
			case cl.errs <- err:
			default:
			}
		},
	}
	cp := &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true, Properties: &paho.ConnectProperties{}}
	for _, o := range opts {
		o(&cc, cp)
	}
	cl.Client = paho.NewClient(cc)
	ca, err := cl.Connect(ctxT(t), cp)
	cl.connack = ca
	t.Cleanup(func() {
		_ = cl.Disconnect(&paho.Disconnect{ReasonCode: 0})
		nc.Close()
		<-cl.Done()
	})
	if err != nil && ca == nil {
		nc.Close()
		return nil, err
	}
	return cl, nil
}

func (c *client) subscribe(t testing.TB, filter string, qos byte) {
	t.Helper()
	sa, err := c.Subscribe(ctxT(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
	require.NoError(t, err)
	require.Equal(t, qos, sa.Reasons[0])
}

func (c *client) publish(t testing.TB, topic string, qos byte, payload string) *paho.PublishResponse {
	t.Helper()
	r, err := c.Publish(ctxT(t), &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(payload)})
	require.NoError(t, err)
	return r
}

func pubMsg(topic, payload string) *paho.Publish {
	return &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)}
}

// waitOffline waits until the broker has seen client id's connection end.
func waitOffline(t testing.TB, b *Broker, id string) {
	t.Helper()
	require.Eventually(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		s := b.sessions[id]
		return s == nil || s.conn == nil
	}, waitFor, 2*time.Millisecond)
}

// next returns the next received publish or fails after waitFor.
func (c *client) next(t testing.TB) *paho.Publish {
	t.Helper()
	select {
	case p := <-c.msgs:
		return p
	case <-time.After(waitFor):
		t.Fatal("no message received")
		return nil
	}
}

// none checks that nothing arrived: a marker published after the actions under test must be the
// next message c receives (the broker writes to a connection in order).
func (c *client) none(t testing.TB, b *Broker) {
	t.Helper()
	marker := fmt.Sprintf("marker/%p/%d", c, time.Now().UnixNano())
	c.subscribe(t, marker, 1)
	probe := dialClient(t, b, "probe-"+strings.ReplaceAll(marker, "/", "-"))
	probe.publish(t, marker, 1, "marker")
	p := c.next(t)
	require.Equal(t, marker, p.Topic, "unexpected message on %s: %q", p.Topic, p.Payload)
}

// raw is a bare MQTT connection for protocol-level checks.
type raw struct {
	nc net.Conn
	br *bufio.Reader
}

func dialRaw(t testing.TB, b *Broker) *raw {
	t.Helper()
	nc, err := net.Dial("tcp", b.Addrs()[0])
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	return &raw{nc: nc, br: bufio.NewReader(nc)}
}

func (r *raw) send(t testing.TB, p interface {
	WriteTo(io.Writer) (int64, error)
}) {
	t.Helper()
	_, err := p.WriteTo(r.nc)
	require.NoError(t, err)
}

func (r *raw) write(t testing.TB, b []byte) {
	t.Helper()
	_, err := r.nc.Write(b)
	require.NoError(t, err)
}

// read returns the next packet from the broker, or nil when the connection is closed.
func (r *raw) read(t testing.TB) *packets.ControlPacket {
	t.Helper()
	_ = r.nc.SetReadDeadline(time.Now().Add(waitFor))
	cp, err := packets.ReadPacket(r.br)
	if err != nil {
		var ne net.Error
		if ok := asNetErr(err, &ne); ok && ne.Timeout() {
			t.Fatal("read timed out")
		}
		return nil
	}
	return cp
}

func asNetErr(err error, ne *net.Error) bool {
	e, ok := err.(net.Error)
	if ok {
		*ne = e
	}
	return ok
}

// connect sends CONNECT and returns the CONNACK.
func (r *raw) connect(t testing.TB, id string, clean bool, expiry uint32) *packets.Connack {
	t.Helper()
	cp := packets.NewControlPacket(packets.CONNECT)
	c := cp.Content.(*packets.Connect)
	c.ClientID, c.CleanStart, c.KeepAlive = id, clean, 30
	c.Properties.SessionExpiryInterval = &expiry
	r.send(t, cp)
	ack := r.read(t)
	require.NotNil(t, ack)
	require.Equal(t, packets.CONNACK, ack.Type)
	return ack.Content.(*packets.Connack)
}

// expectDisconnect reads until a DISCONNECT with code arrives, then expects the connection to close.
func (r *raw) expectDisconnect(t testing.TB, code byte) {
	t.Helper()
	for {
		cp := r.read(t)
		require.NotNil(t, cp, "connection closed without DISCONNECT 0x%02x", code)
		if d, ok := cp.Content.(*packets.Disconnect); ok {
			require.Equal(t, code, d.ReasonCode)
			require.Nil(t, r.read(t))
			return
		}
	}
}
