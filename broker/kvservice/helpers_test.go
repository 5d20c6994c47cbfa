package kvservice

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/statestore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitFor = 10 * time.Second

// fixture is a broker on 127.0.0.1:0 serving a fresh engine through a started Service.
type fixture struct {
	engine *statestore.Engine
	svc    *Service
	b      *broker.Broker
}

func newFixture(t *testing.T, mutate ...func(*statestore.Options, *broker.Options)) *fixture {
	t.Helper()
	return newFixtureWith(t, func(svc *Service) []broker.Service { return []broker.Service{svc} }, mutate...)
}

// newFixtureWith is newFixture with the broker's Services built by services around the Service.
func newFixtureWith(t *testing.T, services func(*Service) []broker.Service, mutate ...func(*statestore.Options, *broker.Options)) *fixture {
	t.Helper()
	eo := statestore.NewDefaultOptions()
	eo.NodeID = "store-node"
	o := broker.NewDefaultOptions()
	for _, m := range mutate {
		m(&eo, o)
	}
	engine, err := statestore.NewEngine(eo)
	require.NoError(t, err)
	svc, err := New(Options{Engine: engine})
	require.NoError(t, err)
	o.Addr = "127.0.0.1:0"
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	o.Services = services(svc)
	b, err := broker.New(o)
	require.NoError(t, err)
	require.NoError(t, b.Start())
	require.NoError(t, svc.Start(b))
	t.Cleanup(func() {
		require.NoError(t, svc.Close())
		require.NoError(t, b.Close())
		require.NoError(t, engine.Close())
	})
	return &fixture{engine: engine, svc: svc, b: b}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

// client is a raw paho.golang v5 client with its received publishes in msgs.
type client struct {
	*paho.Client
	id           string
	msgs         chan *paho.Publish
	disconnected chan byte // reason code of a DISCONNECT from the broker
}

func (f *fixture) dial(t *testing.T, id string, mutate ...func(*paho.ClientConfig)) *client {
	t.Helper()
	return dialAddr(t, f.b.Addrs()[0], id, mutate...)
}

// dialAddr connects a client to the broker at addr; it disconnects at the end of the test.
func dialAddr(t *testing.T, addr, id string, mutate ...func(*paho.ClientConfig)) *client {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	c := &client{id: id, msgs: make(chan *paho.Publish, 1000), disconnected: make(chan byte, 1)}
	cfg := paho.ClientConfig{
		ClientID: id,
		Conn:     nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.msgs <- pr.Packet
			return true, nil
		}},
		OnClientError: func(error) {},
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case c.disconnected <- d.ReasonCode:
			default:
			}
		},
	}
	for _, m := range mutate {
		m(&cfg)
	}
	c.Client = paho.NewClient(cfg)
	ca, err := c.Connect(ctxT(t), &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true})
	require.NoError(t, err)
	require.Equal(t, byte(0), ca.ReasonCode)
	t.Cleanup(func() {
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		nc.Close()
		<-c.Done()
	})
	return c
}

func (c *client) subscribe(t *testing.T, filter string) {
	t.Helper()
	sa, err := c.Subscribe(ctxT(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	require.NoError(t, err)
	require.Equal(t, byte(1), sa.Reasons[0])
}

// responseTopic is the Rust/docs form of docs/state-store-protocol.md#topics.
func responseTopic(id string) string {
	return "clients/" + id + "/services/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke/response"
}

// request publishes payload as a state store request at QoS 1 with the SDKs' properties and returns
// the PUBACK reason code.
func (c *client) request(t *testing.T, payload string, corr []byte, user ...string) byte {
	t.Helper()
	props := &paho.PublishProperties{
		ResponseTopic:   responseTopic(c.id),
		CorrelationData: corr,
		ContentType:     "application/octet-stream",
	}
	expiry := uint32(10)
	props.MessageExpiry = &expiry
	for i := 0; i+1 < len(user); i += 2 {
		props.User.Add(user[i], user[i+1])
	}
	r, err := c.Publish(ctxT(t), &paho.Publish{Topic: statestore.RequestTopic, QoS: 1, Payload: []byte(payload), Properties: props})
	if r == nil { // paho returns the PUBACK with an error when its reason code is a failure
		require.NoError(t, err)
	}
	return r.ReasonCode
}

// next returns the next publish received, failing after waitFor.
func (c *client) next(t *testing.T) *paho.Publish {
	t.Helper()
	select {
	case p := <-c.msgs:
		return p
	case <-time.After(waitFor):
		t.Fatalf("%s: no message within %s", c.id, waitFor)
		return nil
	}
}

// call sends a request and returns its response, checking the correlation data and status.
func (c *client) call(t *testing.T, payload string, user ...string) *paho.Publish {
	t.Helper()
	corr := make([]byte, 16)
	_, _ = rand.Read(corr)
	require.Equal(t, byte(0), c.request(t, payload, corr, user...))
	p := c.next(t)
	require.Equal(t, responseTopic(c.id), p.Topic)
	require.Equal(t, corr, p.Properties.CorrelationData)
	require.Equal(t, "200", p.Properties.User.Get("__stat"))
	return p
}
