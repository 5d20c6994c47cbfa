package pubsubmqtt5

import (
	"fmt"
	"time"

	"github.com/mqdapr/mqdapr/internal/mdparse"
	"github.com/mqdapr/mqdapr/internal/mqttconn"
)

// Ordering modes: how messages are spread over the receiveMaximum handler slots.
const (
	// OrderingTopic handles the messages of one MQTT topic one at a time, in receive order; distinct
	// topics (e.g. one per device) run in parallel.
	OrderingTopic = "topic"
	// OrderingNone handles every message as soon as a slot is free: most parallel, no order.
	OrderingNone = "none"
	// OrderingKey handles the messages with one ordering key (metadata orderingKeyFrom: a payload
	// field or a user property) one at a time, in receive order; messages without it are ordered
	// by topic.
	OrderingKey = "key"
)

// What Publish does when the broker answers PUBACK 0x10 "no matching subscribers" (the broker
// discarded the message: nobody subscribes to its topic).
const (
	// NoSubscribersFail returns ErrNoSubscribers: the caller (daprd's resiliency, the app) retries,
	// so nothing is lost silently. daprd's own dead-lettering arrives as an ordinary Publish.
	NoSubscribersFail = "fail"
	// NoSubscribersAccept reports success, as MQTT does: the message is gone.
	NoSubscribersAccept = "accept"
)

// Publish connection modes: which MQTT connection Publish (and dead-lettering) sends on.
const (
	// PublishConnectionSeparate publishes on a connection of its own, client id
	// <subscribing client id>-pub (with the same session settings): a publish never waits behind
	// deliveries and their acknowledgements on the subscribing connection.
	PublishConnectionSeparate = "separate"
	// PublishConnectionShared publishes on the subscribing connection: one connection and one
	// client id per component instance (a broker that admits only known client ids).
	PublishConnectionShared = "shared"
)

// Metadata is the component's configuration. Field tags are the metadata keys; metadata.yaml
// documents each one and a test keeps the two in step.
type Metadata struct {
	mqttconn.Settings `mapstructure:",squash"`

	// QoS of publishes and subscriptions: 1 (default, at least once) or 0 (at most once).
	QoS uint8 `mapstructure:"qos"`
	// Retain is the default retain flag of publishes (per-request metadata "retain" overrides it).
	Retain bool `mapstructure:"retain"`
	// ReceiveMaximum is sent in CONNECT and bounds the handlers running at once.
	ReceiveMaximum uint16 `mapstructure:"receiveMaximum"`
	// AckFlushInterval is the shortest time between two writes of acknowledgements (those ready
	// meanwhile leave together). Against a broker that honours Receive Maximum, receive throughput
	// is at most about receiveMaximum / ackFlushInterval.
	AckFlushInterval time.Duration `mapstructure:"ackFlushInterval"`
	// Ordering is "topic" (default), "none" or "key". It also decides the partition of a message
	// in a partitioned subscription: the hash of its ordering key (topic or key), round robin with
	// "none".
	Ordering string `mapstructure:"ordering"`
	// OrderingKeyFrom, with ordering "key": "payload:<JSON field path>" or "property:<user property>".
	OrderingKeyFrom string `mapstructure:"orderingKeyFrom"`
	// key is OrderingKeyFrom parsed by validate.
	key orderKey
	// SharedSubscriptionGroup subscribes as $share/<group>/<topic> so replicas split the stream.
	SharedSubscriptionGroup string `mapstructure:"sharedSubscriptionGroup"`
	// MaxDeliveryAttempts is how often a failing message is handed to the app before it goes to the
	// dead-letter topic (or, without one, is reported loudly and retried on). 0 means no limit.
	MaxDeliveryAttempts int `mapstructure:"maxDeliveryAttempts"`
	// DeadLetterTopic receives messages that reached MaxDeliveryAttempts.
	DeadLetterTopic string `mapstructure:"deadLetterTopic"`
	// RetryInitialInterval and RetryMaxInterval bound the backoff between attempts.
	RetryInitialInterval time.Duration `mapstructure:"retryInitialInterval"`
	RetryMaxInterval     time.Duration `mapstructure:"retryMaxInterval"`
	// PublishTimeout bounds a publish (waiting for the connection and the PUBACK) when the caller's
	// context has no earlier deadline.
	PublishTimeout time.Duration `mapstructure:"publishTimeout"`
	// UnsubscribeGrace: a subscription without a stream while others are open is removed from the
	// session (its held messages released) once it has had none for this long, counted from the
	// later of its stream closing and the first stream reopening after none were open; while no
	// stream is open (daprd restarting) subscriptions stay and messages wait for the new streams.
	UnsubscribeGrace time.Duration `mapstructure:"unsubscribeGrace"`
	// NoMatchingSubscribers is what Publish does on PUBACK 0x10: "fail" (default) or "accept".
	// A retained publish is accepted either way (the broker keeps it as the retained message).
	NoMatchingSubscribers string `mapstructure:"noMatchingSubscribers"`
	// StateDir holds one small file per client id: the MQTT filters the component may have in its
	// broker session, so that a restarted component can remove the ones the app no longer
	// subscribes to. "" means $XDG_STATE_HOME/mqdapr/pubsub, else ~/.local/state/mqdapr/pubsub.
	StateDir string `mapstructure:"stateDir"`
	// PublishConnection is "separate" (default) or "shared" (see PublishConnectionSeparate).
	PublishConnection string `mapstructure:"publishConnection"`
	// ShutdownTimeout is how long Close waits for running handlers so their messages can be acked.
	ShutdownTimeout time.Duration `mapstructure:"shutdownTimeout"`
}

// Defaults of the component's own fields.
const (
	DefaultQoS                  = 1
	DefaultReceiveMaximum       = 16
	DefaultMaxDeliveryAttempts  = 10
	DefaultRetryInitialInterval = 100 * time.Millisecond
	DefaultRetryMaxInterval     = 10 * time.Second
	DefaultPublishTimeout       = 30 * time.Second
	DefaultShutdownTimeout      = 10 * time.Second
	DefaultUnsubscribeGrace     = 10 * time.Second
)

func defaultMetadata() Metadata {
	return Metadata{
		Settings:              mqttconn.DefaultSettings(),
		QoS:                   DefaultQoS,
		ReceiveMaximum:        DefaultReceiveMaximum,
		AckFlushInterval:      mqttconn.DefaultAckFlushInterval,
		Ordering:              OrderingTopic,
		MaxDeliveryAttempts:   DefaultMaxDeliveryAttempts,
		RetryInitialInterval:  DefaultRetryInitialInterval,
		RetryMaxInterval:      DefaultRetryMaxInterval,
		PublishTimeout:        DefaultPublishTimeout,
		ShutdownTimeout:       DefaultShutdownTimeout,
		UnsubscribeGrace:      DefaultUnsubscribeGrace,
		NoMatchingSubscribers: NoSubscribersFail,
		PublishConnection:     PublishConnectionSeparate,
	}
}

// parseMetadata decodes and validates props; unknown keys (other than daprd's) are returned for a
// warning.
func parseMetadata(props map[string]string) (Metadata, []string, error) {
	md := defaultMetadata()
	unknown, err := mdparse.DecodeComponent(props, &md)
	if err != nil {
		return md, nil, fmt.Errorf("%w: %w", ErrInvalidMetadata, err)
	}
	if err := md.validate(); err != nil {
		return md, nil, err
	}
	return md, unknown, nil
}

// ParseMetadata decodes and validates a Component's metadata exactly as Init does, without any
// I/O, and returns the unknown keys Init would warn about: for checks outside the package, such as
// the offline validation of the Kubernetes manifests (tests/kubernetes).
func ParseMetadata(props map[string]string) (Metadata, []string, error) {
	return parseMetadata(props)
}

func (m *Metadata) validate() error {
	if err := m.Settings.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidMetadata, err)
	}
	if m.QoS > 1 {
		return fmt.Errorf("%w: qos=%d: want 0 or 1", ErrInvalidMetadata, m.QoS)
	}
	if m.ReceiveMaximum == 0 {
		return fmt.Errorf("%w: receiveMaximum=0: want 1 to 65535", ErrInvalidMetadata)
	}
	if m.AckFlushInterval < time.Millisecond || m.AckFlushInterval > time.Second {
		return fmt.Errorf("%w: ackFlushInterval=%s: want from 1ms to 1s", ErrInvalidMetadata, m.AckFlushInterval)
	}
	switch m.Ordering {
	case OrderingTopic, OrderingNone:
		if m.OrderingKeyFrom != "" {
			return fmt.Errorf("%w: orderingKeyFrom=%q is used only with ordering=%q (ordering is %q)", ErrInvalidMetadata, m.OrderingKeyFrom, OrderingKey, m.Ordering)
		}
	case OrderingKey:
		if m.OrderingKeyFrom == "" {
			return fmt.Errorf("%w: ordering=%q needs orderingKeyFrom: want %s<JSON field path> or %s<MQTT user property name>", ErrInvalidMetadata, OrderingKey, keyPayloadPrefix, keyPropertyPrefix)
		}
		k, err := parseOrderingKey(m.OrderingKeyFrom)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidMetadata, err)
		}
		m.key = k
	default:
		return fmt.Errorf("%w: ordering=%q: want %q, %q or %q", ErrInvalidMetadata, m.Ordering, OrderingTopic, OrderingNone, OrderingKey)
	}
	if m.SharedSubscriptionGroup != "" {
		if err := validateShareName(m.SharedSubscriptionGroup); err != nil {
			return fmt.Errorf("%w: sharedSubscriptionGroup: %w", ErrInvalidMetadata, err)
		}
	}
	if m.MaxDeliveryAttempts < 0 {
		return fmt.Errorf("%w: maxDeliveryAttempts=%d: want 0 (no limit) or more", ErrInvalidMetadata, m.MaxDeliveryAttempts)
	}
	if m.DeadLetterTopic != "" {
		if err := validateTopicName(m.DeadLetterTopic); err != nil {
			return fmt.Errorf("%w: deadLetterTopic: %w", ErrInvalidMetadata, err)
		}
	}
	if m.RetryInitialInterval <= 0 || m.RetryMaxInterval < m.RetryInitialInterval {
		return fmt.Errorf("%w: retryInitialInterval=%s retryMaxInterval=%s: want 0 < initial <= max", ErrInvalidMetadata, m.RetryInitialInterval, m.RetryMaxInterval)
	}
	if m.NoMatchingSubscribers != NoSubscribersFail && m.NoMatchingSubscribers != NoSubscribersAccept {
		return fmt.Errorf("%w: noMatchingSubscribers=%q: want %q or %q", ErrInvalidMetadata, m.NoMatchingSubscribers, NoSubscribersFail, NoSubscribersAccept)
	}
	if m.PublishConnection != PublishConnectionSeparate && m.PublishConnection != PublishConnectionShared {
		return fmt.Errorf("%w: publishConnection=%q: want %q or %q", ErrInvalidMetadata, m.PublishConnection, PublishConnectionSeparate, PublishConnectionShared)
	}
	if m.PublishTimeout <= 0 {
		return fmt.Errorf("%w: publishTimeout=%s: want a positive duration", ErrInvalidMetadata, m.PublishTimeout)
	}
	return nil
}
