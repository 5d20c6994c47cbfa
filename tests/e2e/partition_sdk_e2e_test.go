package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dapr/go-sdk/service/common"
	daprgrpc "github.com/dapr/go-sdk/service/grpc"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/metadata"

	"github.com/mqdapr/mqdapr/components/pubsub-mqtt5/partition"
)

// A go-sdk gRPC app subscribes to the partitions with partition.Topics and one handler: daprd
// calls it with the partition's Dapr topic in TopicEvent.Topic (so the SDK finds the handler
// without DisableTopicValidation, which keeps one subscription per pub/sub) and the MQTT topic in
// the mqtt-topic gRPC header, and every reading arrives through its device topic's partition.
func TestPartitionedSubscriptionWithGoSDKApp(t *testing.T) {
	s := newStack(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	svc := daprgrpc.NewServiceWithListener(lis)
	var mu sync.Mutex
	seen := map[string]string{} // deviceId/seq → the partition topic it came through
	handler := func(ctx context.Context, e *common.TopicEvent) (bool, error) {
		var r reading
		if err := json.Unmarshal(e.RawData, &r); err != nil {
			return false, err
		}
		// daprd sends a message's metadata as gRPC headers named as they are, which the go-sdk's
		// TopicEvent.Metadata (keys prefixed "metadata." only) leaves out: read them from ctx.
		md, _ := metadata.FromIncomingContext(ctx)
		mqttTopic := strings.Join(md.Get("mqtt-topic"), "")
		want := partition.Topic(telemetryFilter, partition.Of(mqttTopic, 4), 4)
		mu.Lock()
		defer mu.Unlock()
		seen[fmt.Sprintf("%s/%d", r.DeviceID, r.Seq)] = e.Topic
		if e.Topic != want || mqttTopic != "devices/"+r.DeviceID+"/telemetry" {
			t.Errorf("%q came through %s, want %s", mqttTopic, e.Topic, want)
		}
		return false, nil
	}
	for _, topic := range partition.Topics(telemetryFilter, 4) {
		require.NoError(t, svc.AddTopicEventHandler(&common.Subscription{
			PubsubName: "mqtt", Topic: topic, Metadata: map[string]string{"rawPayload": "true"},
		}, handler))
	}
	go func() { _ = svc.Start() }()
	t.Cleanup(func() { _ = svc.GracefulStop() })

	r := s.newReplica("r1", nil)
	r.startComponents()
	r.startDaprd("connector", lis.Addr().(*net.TCPAddr).Port, "grpc")
	waitPartitionsOpen(t, r, 4)
	s.devices(t, "devsim", "-count", "80", "-devices", "8", "-seq-start", "1")
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == 80
	}, 60*time.Second, 20*time.Millisecond, "every reading delivered")
	mu.Lock()
	defer mu.Unlock()
	parts := map[string]bool{}
	for _, p := range seen {
		parts[p] = true
	}
	assert.Len(t, parts, 4, "through all 4 partitions")
}
