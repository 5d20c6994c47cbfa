package pubsubmqtt5

import (
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/dapr/components-contrib/pubsub"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/broker/brokertest"
	"github.com/mqdapr/mqdapr/internal/testutil"
)

// By default a component publishes on a connection of its own, client id <subscribing id>-pub,
// and subscribes on the other; with publishConnection "shared" it has one connection and one
// client id. Seen from the broker: the client ids Mosquitto logs, the connections mqbroker counts.
func TestPublishConnection(t *testing.T) {
	for _, tc := range []struct {
		mode    string
		pubID   string
		clients []string
	}{
		{PublishConnectionSeparate, "app-pubconn-ps-pub", []string{"app-pubconn-ps", "app-pubconn-ps-pub"}},
		{PublishConnectionShared, "app-pubconn-ps", []string{"app-pubconn-ps"}},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			b := startBroker(t)
			ps := newComponent(t, props(b.URL(false), "pubconn", "publishConnection", tc.mode))
			assert.Equal(t, "app-pubconn-ps", ps.ClientID())
			assert.Equal(t, tc.pubID, ps.PublishClientID())

			// Publishes reach the component's own subscription, whichever connection they leave on.
			topic := uniqueTopic(t)
			c := newCollector()
			require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, c.handler))
			publish(t, ps, topic, "one")
			assert.Equal(t, "one", string(c.next(t, 10*time.Second).Data))

			switch br := b.(type) {
			case *testutil.Mosquitto:
				seen := map[string]bool{}
				for _, m := range regexp.MustCompile(`New client connected from \S+ as (\S+)`).FindAllStringSubmatch(br.Log(), -1) {
					seen[m[1]] = true
				}
				var ids []string
				for id := range seen {
					ids = append(ids, id)
				}
				slices.Sort(ids)
				assert.Equal(t, tc.clients, ids, "client ids Mosquitto saw")
			case *brokertest.Embedded:
				assert.Equal(t, int64(len(tc.clients)), br.Connections(), "connections mqbroker has open")
			default:
				t.Fatalf("unknown test broker %T", b)
			}
		})
	}
}

// publishConnection accepts only its two values.
func TestPublishConnectionMetadata(t *testing.T) {
	_, _, err := parseMetadata(map[string]string{"publishConnection": "both"})
	require.ErrorIs(t, err, ErrInvalidMetadata)
	require.ErrorContains(t, err, `publishConnection="both": want "separate" or "shared"`)
	md, _, err := parseMetadata(map[string]string{})
	require.NoError(t, err)
	require.Equal(t, PublishConnectionSeparate, md.PublishConnection)
}
