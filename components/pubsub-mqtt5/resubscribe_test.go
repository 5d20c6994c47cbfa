package pubsubmqtt5

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dapr/components-contrib/pubsub"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// subscribeGate is a mochi hook that can hold the first SUBSCRIBE of a client for given filters
// (mochi handles a client's packets in order, so everything the client sends after it waits too),
// and logs the SUBSCRIBE and UNSUBSCRIBE operations on every filter in the order mochi saw them.
type subscribeGate struct {
	mochi.HookBase
	mu       sync.Mutex // guards the fields below
	client   string
	filters  map[string]bool
	entered  chan struct{}
	released chan struct{}
	ops      map[string][]string // filter -> "sub"/"unsub", in order
}

func (g *subscribeGate) ID() string { return "subscribe-gate" }

func (g *subscribeGate) Provides(b byte) bool {
	return b == mochi.OnSubscribe || b == mochi.OnUnsubscribe
}

func (g *subscribeGate) arm(client string, filters ...string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.client, g.filters = client, map[string]bool{}
	for _, f := range filters {
		g.filters[f] = true
	}
	g.entered, g.released = make(chan struct{}), make(chan struct{})
}

func (g *subscribeGate) log(cl *mochi.Client, pk packets.Packet, op string) (hold chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ops == nil {
		g.ops = map[string][]string{}
	}
	for _, f := range pk.Filters {
		g.ops[f.Filter] = append(g.ops[f.Filter], op)
		if op == "sub" && cl.ID == g.client && g.filters[f.Filter] {
			g.filters = nil // only the first
			close(g.entered)
			hold = g.released
		}
	}
	return hold
}

func (g *subscribeGate) OnSubscribe(cl *mochi.Client, pk packets.Packet) packets.Packet {
	if hold := g.log(cl, pk, "sub"); hold != nil {
		<-hold
	}
	return pk
}

func (g *subscribeGate) OnUnsubscribe(cl *mochi.Client, pk packets.Packet) packets.Packet {
	g.log(cl, pk, "unsub")
	return pk
}

func (g *subscribeGate) last(filter string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	ops := g.ops[filter]
	if len(ops) == 0 {
		return ""
	}
	return ops[len(ops)-1]
}

// The subscriptions renewed after a reconnection and a subscription being removed meanwhile:
// the removal's UNSUBSCRIBE is never followed by the renewal's SUBSCRIBE of the same filter (which
// would leave it in the session, unknown to the registry). The renewal goes through the filters
// in map order, so each round holds whichever SUBSCRIBE comes first: with six other filters, the
// removed one comes after the held one in about six rounds of seven, so over eight rounds the
// interleaving that re-added the filter occurs with near certainty.
func TestResubscribeDoesNotReaddRemovedFilter(t *testing.T) {
	gate := &subscribeGate{}
	srv, url := startMochi(t, gate)
	for round := range 8 {
		ps := newComponent(t, props(url, fmt.Sprintf("r%d", round), "unsubscribeGrace", "500ms"))
		base := uniqueTopic(t)
		a := base + "/a"
		ctxA, closeA := context.WithCancel(t.Context())
		require.NoError(t, ps.Subscribe(ctxA, pubsub.SubscribeRequest{Topic: a}, newCollector().handler))
		others := make([]string, 6) // with seven entries map order puts a anywhere, not mostly first
		for i := range others {
			others[i] = fmt.Sprintf("%s/b%d", base, i)
			require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: others[i]}, newCollector().handler))
		}

		gate.arm(ps.ClientID(), append([]string{a}, others...)...)
		cl, ok := srv.Clients.Get(ps.ClientID())
		require.True(t, ok)
		_ = srv.DisconnectClient(cl, packets.ErrAdministrativeAction) // returns the code it sent
		select {
		case <-gate.entered: // the renewal's first SUBSCRIBE waits in the broker
		case <-time.After(15 * time.Second):
			t.Fatal("no SUBSCRIBE after the reconnection")
		}
		closeA()
		time.Sleep(900 * time.Millisecond) // the grace passes while the renewal waits (the behaviour under test)
		close(gate.released)

		require.Eventually(t, func() bool { return gate.last(a) == "unsub" }, 15*time.Second, 5*time.Millisecond, "round %d: a is UNSUBSCRIBEd", round)
		require.Eventually(t, func() bool {
			for _, o := range others {
				if gate.last(o) != "sub" {
					return false
				}
			}
			return true
		}, 15*time.Second, 5*time.Millisecond, "the other subscriptions are renewed")
		time.Sleep(500 * time.Millisecond) // nothing more is sent for a (a bounded "never again" check)
		require.Equal(t, "unsub", gate.last(a), "round %d: the renewal subscribed a again after its removal", round)
		require.NoError(t, ps.Close())
	}
}
