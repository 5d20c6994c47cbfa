package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
)

// ErrPublish is returned when the broker refused a publish (PUBACK reason code ≥ 0x80).
var ErrPublish = errors.New("devicesim: publish refused")

const maxPublishAttempts = 5

// mqttPublisher publishes through autopaho at QoS 1 with a persistent session: clean start false
// and a session expiry, so messages in flight at a disconnection are resent after reconnecting.
type mqttPublisher struct {
	cm *autopaho.ConnectionManager
}

// dial connects to brokerURL (mqtt://, tcp://, mqtts://) as clientID and waits for the first
// connection until ctx ends.
func dial(ctx context.Context, brokerURL, clientID string, sessionExpiry time.Duration) (*mqttPublisher, error) {
	u, err := url.Parse(brokerURL)
	if err != nil {
		return nil, fmt.Errorf("broker URL %q: %w", brokerURL, err)
	}
	switch u.Scheme {
	case "mqtt", "tcp":
	case "mqtts":
		u.Scheme = "tls"
	default:
		return nil, fmt.Errorf("broker URL %q: scheme %q; want mqtt, tcp or mqtts", brokerURL, u.Scheme)
	}
	cfg := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		KeepAlive:                     30,
		CleanStartOnInitialConnection: false,
		SessionExpiryInterval:         uint32(sessionExpiry / time.Second),
		ConnectTimeout:                10 * time.Second,
		ClientConfig:                  paho.ClientConfig{ClientID: clientID},
	}
	if pw, ok := u.User.Password(); ok {
		cfg.ConnectUsername, cfg.ConnectPassword = u.User.Username(), []byte(pw)
	}
	cm, err := autopaho.NewConnection(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", u.Redacted(), err)
	}
	if err := cm.AwaitConnection(ctx); err != nil {
		_ = cm.Disconnect(context.Background())
		return nil, fmt.Errorf("connecting to %s: %w", u.Redacted(), err)
	}
	return &mqttPublisher{cm: cm}, nil
}

// Publish implements publisher.
func (p *mqttPublisher) Publish(ctx context.Context, topic string, payload []byte, retain bool, userProps map[string]string) error {
	pub := &paho.Publish{QoS: 1, Topic: topic, Payload: payload, Retain: retain,
		Properties: &paho.PublishProperties{ContentType: "application/json"}}
	for k, v := range userProps {
		pub.Properties.User.Add(k, v)
	}
	// While the connection is down, wait for it and send again: the same payload (same seq) may
	// then reach the broker twice, which the connector deduplicates.
	var res *paho.PublishResponse
	var err error
	for attempt := 0; ; attempt++ {
		if res, err = p.cm.Publish(ctx, pub); err == nil || attempt == maxPublishAttempts-1 || ctx.Err() != nil {
			break
		}
		if werr := p.cm.AwaitConnection(ctx); werr != nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("publishing to %s: %w", topic, err)
	}
	if res != nil && res.ReasonCode >= 0x80 {
		return fmt.Errorf("%w: %s: reason code 0x%02x", ErrPublish, topic, res.ReasonCode)
	}
	return nil
}

// Close disconnects cleanly (the session stays on the broker for sessionExpiry).
func (p *mqttPublisher) Close(ctx context.Context) error {
	return p.cm.Disconnect(ctx)
}
