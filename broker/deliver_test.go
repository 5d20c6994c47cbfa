package broker

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"
)

// privateService answers a publish on whoami by delivering a message on "private/<client>" to the
// publishing connection alone, and records each connection end it is told of.
type privateService struct {
	mu     sync.Mutex
	conns  map[string]ConnID // client -> connection of its last whoami
	closed chan [2]any       // (client, ConnID) of each ConnectionClosed
}

func (*privateService) Match(topic string) bool { return topic == "whoami" }

func (s *privateService) Handle(ctx context.Context, clientID string, msg *Message, pub Publisher) error {
	id, ok := ConnectionOf(ctx)
	if !ok || id == 0 {
		return &ReasonError{Code: CodeImplementationSpecificError, Reason: "no connection in ctx"}
	}
	s.mu.Lock()
	s.conns[clientID] = id
	s.mu.Unlock()
	return pub.(Deliverer).Deliver(ctx, clientID, id, &Message{Topic: "private/" + clientID, QoS: 1, Payload: msg.Payload})
}

func (s *privateService) ConnectionClosed(clientID string, id ConnID) {
	s.closed <- [2]any{clientID, id}
}

func (s *privateService) conn(clientID string) ConnID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[clientID]
}

// Deliver reaches the one connection it names, subscribed or not, never another client through
// any filter; a connection that has ended (taken over here) gets nothing and is reported to the
// ConnectionObserver with its own ConnID.
func TestDeliverToOneConnection(t *testing.T) {
	for _, durable := range []bool{false, true} {
		t.Run(map[bool]string{false: "memory", true: "durable"}[durable], func(t *testing.T) {
			svc := &privateService{conns: map[string]ConnID{}, closed: make(chan [2]any, 16)}
			b := newBroker(t, func(o *Options) {
				o.Services = []Service{svc}
				if durable {
					o.DataDir = t.TempDir()
				}
			})
			spy := dialClient(t, b, "spy")
			spy.subscribe(t, "#", 1)
			a := dialClient(t, b, "a", withExpiry(60))
			require.Equal(t, CodeSuccess, a.publish(t, "whoami", 1, "hello").ReasonCode)
			p := a.next(t)
			require.Equal(t, "private/a", p.Topic)
			require.Equal(t, "hello", string(p.Payload))
			require.Equal(t, byte(1), p.QoS)
			noPrivate(t, spy, "marker/1")

			old := svc.conn("a")
			a2 := dialClient(t, b, "a", withExpiry(60), resume()) // takes the session over
			select {
			case got := <-svc.closed:
				require.Equal(t, [2]any{"a", old}, got)
			case <-time.After(waitFor):
				t.Fatal("the taken-over connection was not reported")
			}
			require.ErrorIs(t, b.Deliver(ctxT(t), "a", old, &Message{Topic: "private/a", QoS: 1}), ErrNotConnected)
			require.ErrorIs(t, b.Deliver(ctxT(t), "nobody", 0, &Message{Topic: "private/x", QoS: 1}), ErrNotConnected)
			require.ErrorIs(t, b.Deliver(ctxT(t), "a", 0, &Message{Topic: "private/+", QoS: 1}), ErrInvalidTopic)

			a2.subscribe(t, "private/a", 1) // a client that also subscribed still gets one copy
			require.Equal(t, CodeSuccess, a2.publish(t, "whoami", 1, "again").ReasonCode)
			require.NotEqual(t, old, svc.conn("a"))
			// "hello" comes again first when a's PUBACK had not reached the broker before the
			// takeover: a resumed session gets its unacknowledged messages again, as duplicates.
			got := a2.next(t)
			if string(got.Payload) == "hello" {
				require.True(t, got.Duplicate(), "a resent unacknowledged message carries DUP")
				got = a2.next(t)
			}
			require.Equal(t, "again", string(got.Payload))
			a2.none(t, b)
			noPrivate(t, spy, "marker/2")
		})
	}
}

// noPrivate checks that spy (subscribed to '#') received nothing on private/# before marker,
// which it publishes itself (the broker writes to a connection in order).
func noPrivate(t *testing.T, spy *client, marker string) {
	t.Helper()
	spy.publish(t, marker, 1, "")
	for p := spy.next(t); p.Topic != marker; p = spy.next(t) {
		require.NotContains(t, p.Topic, "private/", "another client's delivery reached the spy")
	}
}

// A delivered message carries the subscription identifier of the session's own matching
// subscription, so a client that routes by identifier finds its handler.
func TestDeliverCarriesOwnSubscriptionID(t *testing.T) {
	svc := &privateService{conns: map[string]ConnID{}, closed: make(chan [2]any, 16)}
	b := newBroker(t, func(o *Options) { o.Services = []Service{svc} })
	a := dialClient(t, b, "a")
	id := 7
	sa, err := a.Subscribe(ctxT(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "private/+", QoS: 1}},
		Properties: &paho.SubscribeProperties{SubscriptionIdentifier: &id}})
	require.NoError(t, err)
	require.Equal(t, byte(1), sa.Reasons[0])
	a.publish(t, "whoami", 1, "x")
	p := a.next(t)
	require.NotNil(t, p.Properties.SubscriptionIdentifier)
	require.Equal(t, 7, *p.Properties.SubscriptionIdentifier)
}
