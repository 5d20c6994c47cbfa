package connector

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"

	dapr "github.com/dapr/go-sdk/client"
	"github.com/dapr/go-sdk/service/common"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Subscription metadata keys understood by daprd and pubsub.mqttv5.
const (
	mdRawPayload  = "rawPayload"
	mdSharedGroup = "sharedSubscriptionGroup"
	mdMQTTTopic   = "mqtt-topic"
)

// partitionPrefix starts the Dapr topic of one partition of a partitioned subscription of
// pubsub.mqttv5: "$partition/<i>of<K>/<filter>" is partition i of the K Dapr subscriptions over one
// MQTT subscription of filter (each a serial stream in daprd 1.16, all in parallel).
const partitionPrefix = "$partition/"

// MaxPartitions bounds TelemetryPartitions (pubsub.mqttv5 accepts 1…256).
const MaxPartitions = 256

// TelemetryTopics returns the Dapr topics of the telemetry subscription: the filter itself when
// TelemetryPartitions is 1, else its K partition topics "$partition/<i>of<K>/<filter>".
func (o Options) TelemetryTopics() []string {
	if o.TelemetryPartitions <= 1 {
		return []string{o.TelemetryFilter}
	}
	topics := make([]string, o.TelemetryPartitions)
	for i := range topics {
		topics[i] = fmt.Sprintf("%s%dof%d/%s", partitionPrefix, i, o.TelemetryPartitions, o.TelemetryFilter)
	}
	return topics
}

// stripPartition returns topic without a "$partition/<i>of<K>/" prefix.
func stripPartition(topic string) string {
	if !strings.HasPrefix(topic, partitionPrefix) {
		return topic
	}
	rest := topic[len(partitionPrefix):]
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		return rest[i+1:]
	}
	return topic
}

// Subscriptions returns the subscriptions the app registers: telemetry (one per partition, see
// TelemetryTopics) through the shared group (replicas split the load) and configuration without
// it (every replica gets the retained configuration; retained messages never reach shared
// subscriptions). All are raw payloads.
//
// The first telemetry subscription disables the SDK's topic validation: a plain subscription's
// deliveries carry the concrete MQTT topic (devices/d1/telemetry, config/assets/a1), not the
// filter, so the SDK's lookup by topic misses and falls back to the one registration per pub/sub
// without validation (the SDK keeps only one). A partition's deliveries carry the partition's Dapr
// topic, so partitions 1…K-1 are found by topic and partition 0 takes the fallback. Every
// registration has the same handler, which routes by the MQTT topic (TopicEventHandler, Handle),
// so whichever registration a delivery reaches, it is routed right.
func Subscriptions(pubsub, sharedGroup string, o Options) []*common.Subscription {
	var subs []*common.Subscription
	for i, topic := range o.TelemetryTopics() {
		tel := map[string]string{mdRawPayload: "true"}
		if sharedGroup != "" {
			tel[mdSharedGroup] = sharedGroup
		}
		subs = append(subs, &common.Subscription{PubsubName: pubsub, Topic: topic, Metadata: tel, DisableTopicValidation: i == 0})
	}
	// An explicit empty group overrides a component-level sharedSubscriptionGroup.
	return append(subs, &common.Subscription{PubsubName: pubsub, Topic: o.ConfigFilter, Metadata: map[string]string{mdRawPayload: "true", mdSharedGroup: ""}})
}

// Register adds the subscriptions of Subscriptions to svc, each handled by c.Handle.
func Register(svc common.Service, c *Connector, pubsub, sharedGroup string) error {
	for _, s := range Subscriptions(pubsub, sharedGroup, c.opts) {
		if err := svc.AddTopicEventHandler(s, c.TopicEventHandler); err != nil {
			return fmt.Errorf("connector: subscribing to %s/%s: %w", pubsub, s.Topic, err)
		}
	}
	return nil
}

// TopicEventHandler adapts Handle to the SDK: an error asks daprd to retry (the component then
// redelivers); success acks. The error goes back as gRPC Unavailable with the message only: a
// wrapped gRPC status from a daprd call (say Unimplemented) would otherwise become the answer's
// code, and daprd drops (acks) a message whose handler answered Unimplemented.
func (c *Connector) TopicEventHandler(ctx context.Context, e *common.TopicEvent) (retry bool, err error) {
	m := Message{Topic: stripPartition(e.Topic), Data: e.RawData, Metadata: eventMetadata(ctx, e)}
	if t := m.Metadata[mdMQTTTopic]; t != "" {
		m.Topic = t
	}
	if len(m.Data) == 0 && e.DataBase64 != "" {
		if b, err := base64.StdEncoding.DecodeString(e.DataBase64); err == nil {
			m.Data = b
		}
	}
	if err := c.Handle(ctx, m); err != nil {
		return true, status.Error(codes.Unavailable, err.Error())
	}
	return false, nil
}

// eventMetadata returns a delivery's metadata (mqtt-topic, the MQTT user properties). daprd sends
// it to a gRPC app as request headers under their own names, which the go-sdk's
// TopicEvent.Metadata (headers prefixed "metadata." only) leaves out, so the headers are read
// from ctx; e.Metadata's keys win over a header of the same name. The map also holds the
// transport's and daprd's own headers (content-type, traceparent…), which no key we read
// collides with. Through a partition the MQTT topic is only here: the delivery's topic is the
// partition's Dapr topic.
func eventMetadata(ctx context.Context, e *common.TopicEvent) map[string]string {
	md, _ := metadata.FromIncomingContext(ctx)
	out := make(map[string]string, len(md)+len(e.Metadata))
	for k, v := range md { // grpc lower-cases the keys
		if len(v) > 0 {
			out[k] = v[0]
		}
	}
	for k, v := range e.Metadata {
		out[k] = v
	}
	return out
}

// PublishClient is the part of the Dapr SDK client that DaprPublisher uses.
type PublishClient interface {
	PublishEvent(ctx context.Context, pubsubName, topicName string, data interface{}, opts ...dapr.PublishEventOption) error
}

// DaprPublisher publishes dead letters through daprd, raw (no CloudEvent envelope).
type DaprPublisher struct {
	Client PublishClient
	PubSub string
}

// PublishDeadLetter implements DeadLetterPublisher.
func (p DaprPublisher) PublishDeadLetter(ctx context.Context, topic string, data []byte) error {
	err := p.Client.PublishEvent(ctx, p.PubSub, topic, data,
		dapr.PublishEventWithContentType("application/json"), dapr.PublishEventWithRawPayload())
	if err != nil {
		return fmt.Errorf("publishing to %s/%s: %w", p.PubSub, topic, err)
	}
	return nil
}
