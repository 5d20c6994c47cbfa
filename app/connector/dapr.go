package connector

import (
	"context"
	"encoding/base64"
	"fmt"

	dapr "github.com/dapr/go-sdk/client"
	"github.com/dapr/go-sdk/service/common"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Subscription metadata keys understood by daprd and pubsub.mqttv5.
const (
	mdRawPayload  = "rawPayload"
	mdSharedGroup = "sharedSubscriptionGroup"
	mdMQTTTopic   = "mqtt-topic"
)

// Subscriptions returns the two subscriptions the app registers: telemetry through the shared
// group (replicas split the load) and configuration without it (every replica gets the retained
// configuration; retained messages never reach shared subscriptions). Both are raw payloads.
//
// The telemetry subscription disables the SDK's topic validation: daprd hands over the concrete
// MQTT topic (devices/d1/telemetry), not the filter, so the SDK's lookup by topic misses and falls
// back to the one registration per pub/sub without validation. Its handler routes by topic (Handle),
// so configuration messages that take the same fallback are routed correctly too.
func Subscriptions(pubsub, sharedGroup string, o Options) []*common.Subscription {
	tel := map[string]string{mdRawPayload: "true"}
	if sharedGroup != "" {
		tel[mdSharedGroup] = sharedGroup
	}
	return []*common.Subscription{
		{PubsubName: pubsub, Topic: o.TelemetryFilter, Metadata: tel, DisableTopicValidation: true},
		// An explicit empty group overrides a component-level sharedSubscriptionGroup.
		{PubsubName: pubsub, Topic: o.ConfigFilter, Metadata: map[string]string{mdRawPayload: "true", mdSharedGroup: ""}},
	}
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
	m := Message{Topic: e.Topic, Data: e.RawData, Metadata: e.Metadata}
	if t := e.Metadata[mdMQTTTopic]; t != "" {
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
