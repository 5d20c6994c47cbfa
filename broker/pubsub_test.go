package broker

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// [MQTT-3.3.4-1] [MQTT-4.3.1-1] [MQTT-4.3.2-1] [MQTT-4.3.3-1]: QoS 0, 1 and 2 delivered, at the
// minimum of publish and subscription QoS [MQTT-3.8.4-8].
func TestQoSLevels(t *testing.T) {
	b := newBroker(t, nil)
	sub := dialClient(t, b, "sub")
	sub.subscribe(t, "q/#", 2)
	sub.subscribe(t, "low/#", 1)
	pub := dialClient(t, b, "pub")
	for qos := byte(0); qos <= 2; qos++ {
		pub.publish(t, fmt.Sprintf("q/%d", qos), qos, "hello")
		m := sub.next(t)
		require.Equal(t, fmt.Sprintf("q/%d", qos), m.Topic)
		require.Equal(t, qos, m.QoS)
		require.Equal(t, "hello", string(m.Payload))
	}
	pub.publish(t, "low/x", 2, "downgraded")
	require.Equal(t, byte(1), sub.next(t).QoS)
	r := pub.publish(t, "nobody/x", 1, "x")
	require.Equal(t, CodeNoMatchingSubscribers, r.ReasonCode) // [MQTT-3.4.2-1] 0x10 is a success
}
