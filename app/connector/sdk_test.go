package connector

import (
	"context"
	"net"
	"testing"

	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"github.com/dapr/go-sdk/service/common"
	daprgrpc "github.com/dapr/go-sdk/service/grpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/mqdapr/mqdapr/app/kv"
)

// TestThroughTheSDKService calls the app the way daprd does (AppCallback over gRPC): the
// subscriptions it lists, and deliveries on concrete topics of both wildcard filters.
func TestThroughTheSDKService(t *testing.T) {
	f := newFixture(t, "r1", kv.NewMem(), t.TempDir(), nil)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	svc := daprgrpc.NewServiceWithListener(lis)
	if err := Register(svc, f.c, "mqtt", "connector"); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- svc.Start() }()
	t.Cleanup(func() { _ = svc.GracefulStop(); <-served })

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	app := runtimev1pb.NewAppCallbackClient(conn)
	ctx := context.Background()

	list, err := app.ListTopicSubscriptions(ctx, &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	topics := map[string]map[string]string{}
	for _, s := range list.GetSubscriptions() {
		if s.GetPubsubName() != "mqtt" {
			t.Fatalf("subscription %v", s)
		}
		topics[s.GetTopic()] = s.GetMetadata()
	}
	if len(topics) != 2 || topics["devices/+/telemetry"]["sharedSubscriptionGroup"] != "connector" || topics["config/assets/+"]["rawPayload"] != "true" {
		t.Fatalf("subscriptions %v", topics)
	}

	deliver := func(topic string, data []byte, md ...string) runtimev1pb.TopicEventResponse_TopicEventResponseStatus {
		t.Helper()
		mctx := metadata.AppendToOutgoingContext(ctx, md...)
		res, err := app.OnTopicEvent(mctx, &runtimev1pb.TopicEventRequest{
			Id: "random-per-delivery", PubsubName: "mqtt", Topic: topic, Data: data,
			DataContentType: "application/octet-stream", SpecVersion: "1.0", Type: "com.dapr.event.sent", Source: "x",
		})
		if err != nil { // daprd treats an error as a failed delivery: redelivered
			return runtimev1pb.TopicEventResponse_RETRY
		}
		return res.GetStatus()
	}
	if s := deliver("config/assets/press-7", []byte(assetCfg)); s != runtimev1pb.TopicEventResponse_SUCCESS {
		t.Fatalf("config: %v", s)
	}
	tel := reading("1", "2026-11-27T07:00:00Z", "1")
	for range 2 {
		if s := deliver("devices/dev-1/telemetry", tel, "metadata.mqtt-topic", "devices/dev-1/telemetry"); s != runtimev1pb.TopicEventResponse_SUCCESS {
			t.Fatalf("telemetry: %v", s)
		}
	}
	if s := deliver("elsewhere/x", tel); s != runtimev1pb.TopicEventResponse_RETRY {
		t.Fatalf("unroutable: %v; want RETRY", s)
	}
	// An error wrapping a daprd Unimplemented status must not reach daprd as Unimplemented
	// (daprd would drop the message).
	_, err = f.c.TopicEventHandler(ctx, &common.TopicEvent{Topic: "elsewhere/x"})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("handler error code %v; want Unavailable", status.Code(err))
	}
	rows := f.rows(t)
	if len(rows) != 1 || rows[0].AssetID != "press-7" {
		t.Fatalf("rows %+v", rows)
	}
	if d := f.c.Counters().Duplicates.Load(); d != 1 {
		t.Fatalf("duplicates %d; want 1", d)
	}
}

// TestPartitionedTelemetryThroughTheSDKService: with TelemetryPartitions K the app lists the K
// partition topics of pubsub.mqttv5 (all in the shared group) besides the configuration, and a
// delivery of any partition, whether daprd names it by the concrete topic or by the partition
// topic, reaches the telemetry handler.
func TestPartitionedTelemetryThroughTheSDKService(t *testing.T) {
	f := newFixture(t, "r1", kv.NewMem(), t.TempDir(), nil)
	f.c.opts.TelemetryPartitions = 3
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	svc := daprgrpc.NewServiceWithListener(lis)
	if err := Register(svc, f.c, "mqtt", "connector"); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- svc.Start() }()
	t.Cleanup(func() { _ = svc.GracefulStop(); <-served })
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	app := runtimev1pb.NewAppCallbackClient(conn)
	ctx := context.Background()

	list, err := app.ListTopicSubscriptions(ctx, &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	topics := map[string]map[string]string{}
	for _, s := range list.GetSubscriptions() {
		topics[s.GetTopic()] = s.GetMetadata()
	}
	if len(topics) != 4 || topics["config/assets/+"] == nil {
		t.Fatalf("subscriptions %v; want 3 partitions and the configuration", topics)
	}
	for _, p := range []string{"$partition/0of3/devices/+/telemetry", "$partition/1of3/devices/+/telemetry", "$partition/2of3/devices/+/telemetry"} {
		if md := topics[p]; md["sharedSubscriptionGroup"] != "connector" || md["rawPayload"] != "true" {
			t.Fatalf("partition %s: metadata %v (subscriptions %v)", p, md, topics)
		}
	}
	for i, topic := range []string{"devices/dev-1/telemetry", "$partition/1of3/devices/+/telemetry", "$partition/2of3/devices/dev-1/telemetry"} {
		res, err := app.OnTopicEvent(ctx, &runtimev1pb.TopicEventRequest{
			Id: "x", PubsubName: "mqtt", Topic: topic, Data: reading(string(rune('1'+i)), "2026-11-27T07:00:00Z", "1"),
			DataContentType: "application/octet-stream", SpecVersion: "1.0", Type: "com.dapr.event.sent", Source: "x",
		})
		if err != nil || res.GetStatus() != runtimev1pb.TopicEventResponse_SUCCESS {
			t.Fatalf("delivery on %s: %v %v", topic, res.GetStatus(), err)
		}
	}
	if n := len(f.rows(t)); n != 3 {
		t.Fatalf("%d rows; want 3", n)
	}
}
