package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/mqdapr/mqdapr/internal/mqttconn"
)

// ErrPublish is returned when the broker refused a publish (PUBACK reason code ≥ 0x80).
var ErrPublish = errors.New("devicesim: publish refused")

const maxPublishAttempts = 5

// mqttPublisher publishes through autopaho at QoS 1 with a persistent session: clean start false
// and a session expiry, so messages in flight at a disconnection are resent after reconnecting.
type mqttPublisher struct {
	cm *autopaho.ConnectionManager
}

// credentials are the user name and password of CONNECT (none: an anonymous client).
type credentials struct {
	username string
	password []byte
}

// loadCredentials builds the CONNECT credentials from -username and -password-file (the file's
// content, white space around it trimmed); an error names the file, never its content.
func loadCredentials(username, passwordFile string) (credentials, error) {
	c := credentials{username: username}
	if passwordFile == "" {
		return c, nil
	}
	if username == "" {
		return c, fmt.Errorf("-password-file %s without -username: the broker looks the password up by user name", passwordFile)
	}
	var err error
	switch c.password, err = mqttconn.ReadSecretFile(passwordFile); {
	case errors.Is(err, mqttconn.ErrEmptySecret):
		return c, fmt.Errorf("-password-file %s is empty: want the password on its first line", passwordFile)
	case err != nil:
		return c, fmt.Errorf("-password-file: %w", err)
	}
	return c, nil
}

// dial connects to brokerURL (mqtt://, tcp://, mqtts://) as clientID with creds (or the URL's
// user:password, not both) and waits for the first connection until ctx ends. A CONNACK refusal
// (bad user name or password, not authorized, ...) ends the wait at once: retrying cannot fix it.
func dial(ctx context.Context, brokerURL, clientID string, creds credentials, sessionExpiry time.Duration) (*mqttPublisher, error) {
	u, err := url.Parse(brokerURL)
	if err != nil {
		return nil, fmt.Errorf("broker URL %q: %w", brokerURL, err)
	}
	if u.User != nil && (creds.username != "" || creds.password != nil) {
		return nil, fmt.Errorf("broker URL %s carries credentials and -username/-password-file are given too: give one", u.Redacted())
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
	if creds.username != "" {
		cfg.ConnectUsername, cfg.ConnectPassword = creds.username, creds.password
	}
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	cfg.OnConnectError = func(err error) {
		var ce *autopaho.ConnackError
		if errors.As(err, &ce) {
			cancel(fmt.Errorf("the broker refused the connection: CONNACK 0x%02X %s", ce.ReasonCode, connackReason(ce.ReasonCode)))
		}
	}
	cm, err := autopaho.NewConnection(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", u.Redacted(), err)
	}
	if err := cm.AwaitConnection(wctx); err != nil {
		_ = cm.Disconnect(context.Background())
		if cause := context.Cause(wctx); cause != nil && ctx.Err() == nil {
			err = cause
		}
		return nil, fmt.Errorf("connecting to %s: %w", u.Redacted(), err)
	}
	return &mqttPublisher{cm: cm}, nil
}

// connackReason names the CONNACK refusals a client can cause by its credentials.
func connackReason(code byte) string {
	switch code {
	case 0x86:
		return "bad user name or password"
	case 0x87:
		return "not authorized"
	case 0x8C:
		return "bad authentication method"
	}
	return "refused"
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
