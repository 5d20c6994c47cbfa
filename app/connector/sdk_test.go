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

// TestMetadataAsDaprdSendsIt: daprd 1.16 sends a message's metadata to a gRPC app as headers
// under their own names (mqtt-topic, the MQTT user properties), which the go-sdk's
// TopicEvent.Metadata (keys prefixed "metadata." only) leaves out. Through a partition, whose
// deliveries carry the partition's Dapr topic, the MQTT topic is only in mqtt-topic: the row
// keeps the device's topic and the topic's device is checked against the payload's; a reading
// identified by the message-id user property lands under that id.
func TestMetadataAsDaprdSendsIt(t *testing.T) {
	f := newFixture(t, "r1", kv.NewMem(), t.TempDir(), nil)
	f.c.opts.TelemetryPartitions = 4
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
	deliver := func(topic string, data []byte, md ...string) {
		t.Helper()
		ctx := metadata.AppendToOutgoingContext(context.Background(), md...)
		res, err := app.OnTopicEvent(ctx, &runtimev1pb.TopicEventRequest{
			Id: "x", PubsubName: "mqtt", Topic: topic, Data: data,
			DataContentType: "application/octet-stream", SpecVersion: "1.0", Type: "com.dapr.event.sent", Source: "x",
		})
		if err != nil || res.GetStatus() != runtimev1pb.TopicEventResponse_SUCCESS {
			t.Fatalf("delivery on %s: %v %v", topic, res.GetStatus(), err)
		}
	}
	part := "$partition/2of4/devices/+/telemetry"
	deliver(part, reading("1", "2026-11-27T07:00:00Z", "1"), "mqtt-topic", "devices/dev-1/telemetry")
	noSeq := []byte(`{"deviceId":"dev-1","ts":"2026-11-27T07:00:01Z","metrics":{"temperature":{"value":1,"unit":"F"}}}`)
	deliver(part, noSeq, "mqtt-topic", "devices/dev-1/telemetry", "message-id", "dev-1-77")
	// Published on another device's topic: rejected (dead-lettered), not written.
	deliver(part, reading("2", "2026-11-27T07:00:02Z", "1"), "mqtt-topic", "devices/dev-2/telemetry")

	rows := f.rows(t)
	if len(rows) != 2 {
		t.Fatalf("rows %+v; want 2", rows)
	}
	ids := map[string]string{}
	for _, r := range rows {
		ids[r.ID] = r.Topic
	}
	if ids["dev-1/1"] != "devices/dev-1/telemetry" || ids["dev-1/m-dev-1-77"] != "devices/dev-1/telemetry" {
		t.Fatalf("rows by id → topic %v; want dev-1/1 and dev-1/m-dev-1-77 on devices/dev-1/telemetry", ids)
	}
	if len(f.dl.msgs) != 1 {
		t.Fatalf("%d dead letters; want 1 (the reading on dev-2's topic)", len(f.dl.msgs))
	}
}
